"""The daemon's read-only web view: pages, a JSON API under /api/, live updates.

- `events`: the node's own event stream (`EventHub`), bounded per subscriber;
- `sources`: what the view reads from the node, and from its files (transcripts, audit log);
- `pages`: server-rendered HTML, every value escaped;
- `server`: the aiohttp application and its guards (the only module that imports aiohttp, and
  only a node that serves the view imports it).
"""
