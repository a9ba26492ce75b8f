"""One module per dashboard page; each exports `routes` (HTML) and `api_routes` (JSON)."""
