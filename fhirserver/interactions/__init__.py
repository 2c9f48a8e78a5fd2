"""FHIR RESTful interactions (R4 http.html), free of Flask.

One module per interaction; each plans its writes into a :class:`~.context.Planner`
so that REST calls, batch and transaction Bundles and the importer share one path.
"""
