#!/bin/sh
# Builder-stage helper: remove from a venv what no stage ever runs (the Dockerfile then proves it still imports).
#   slim-venv.sh VENV [PATH_UNDER_SITE_PACKAGES...]
# Generic: test suites shipped inside wheels (not dbt's), C/C++ headers and sources, Cython sources, type stubs.
# pyarrow: Flight RPC and the S3 filesystem (no stage uses them; pyarrow.fs imports S3 only if
# present), its headers, symbol tables (strip) and the two extra copies of libarrow_python.so (symlinks).
# Other shared libraries are NOT stripped: auditwheel-patched ones (numpy.libs/...) break when stripped.
# Extra arguments are further paths (relative to site-packages) a stage image does not need.
set -eu
venv=$1; shift
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
before=$(du -sm "$venv" | cut -f1)
cd "$site"
# (dbt/ is left alone: its include/ folders hold the test materializations dbt runs)
find . -path ./dbt -prune -o -type d -name tests -prune -exec rm -rf {} +
find . -type f \( -name '*.h' -o -name '*.hpp' -o -name '*.c' -o -name '*.cc' -o -name '*.cpp' \
  -o -name '*.pyx' -o -name '*.pxd' -o -name '*.pxi' -o -name '*.pyi' \) -delete
rm -rf numpy/_core/include
if [ -d pyarrow ]; then
  rm -rf pyarrow/include pyarrow/includes pyarrow/src pyarrow/_pyarrow_cpp_tests* \
         pyarrow/*flight* pyarrow/libarrow_s3* pyarrow/_s3fs*
  # pyarrow ships its own libraries unstripped (not auditwheel-patched, so stripping is safe; the
  # Dockerfile's import check proves it): about a fifth of their size is symbol tables.
  if command -v strip > /dev/null; then find pyarrow -name '*.so*' -type f -exec strip --strip-unneeded {} +; fi
  for lib in pyarrow/libarrow_python.so pyarrow/libarrow_python_parquet_encryption.so; do
    real=$(ls "$lib".*.*.* 2>/dev/null | head -1) || true
    if [ -n "$real" ]; then
      for copy in "$lib" "${real%.*.*}"; do ln -sf "$(basename "$real")" "$copy"; done
    fi
  done
fi
for extra in "$@"; do rm -rf ./$extra; done  # unquoted: the paths may be globs
after=$(du -sm "$venv" | cut -f1)
echo "slim-venv: $venv ${before} MB -> ${after} MB"
