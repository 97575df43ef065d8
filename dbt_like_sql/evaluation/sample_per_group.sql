-- A seeded, reproducible sample of `per_group` items per group (all items when per_group is NULL).
SELECT items.*
FROM items, params
QUALIFY params.per_group IS NULL
     OR row_number() OVER (PARTITION BY group_key ORDER BY md5(item_key || params.seed::VARCHAR)) <= params.per_group
ORDER BY group_key, item_key;
