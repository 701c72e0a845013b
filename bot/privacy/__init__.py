"""Privacy: erasing one end customer everywhere (`erasure`), the retention sweeps (`retention`),
their HTTP edge (`routes`: the API call and the dashboard's Privacy page)."""
