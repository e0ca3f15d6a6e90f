"""The HTTP face of the service: the API, its problems and OpenAPI document, the dashboard, the server."""
