"""dbt stage: runs the dbt feature project for one logical date and reports the result."""
