"""The local web app (``samtrack app``): a FastAPI server (server.py) over one editing state per
open video (session.py), and a static page (static/) that needs no build step."""
