"""The shared scoring server and leaderboard: ``create_app(settings)`` in ``service.app``; ``harness serve`` runs it.

Nothing heavy is imported here: the app opens the store and loads its scorers in its lifespan.
"""
