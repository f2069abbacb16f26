"""Serving: streams that carry state token by token, the micro-batcher, the HTTP service.

``serving`` imports ``model``; ``model`` never imports ``serving`` at module level
(``Model.stream`` and ``Model.feed_many`` import it lazily), and the HTTP service is
imported only when the ``serve`` extra is installed.
"""
