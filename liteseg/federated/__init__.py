"""Federated training of the 2D networks on Flower (`pip install 'liteseg[federated]'`).

`config` and `sites` (what a run is and which cases a site trains on) and `local` (one site's
training and evaluation) need only torch; `apps` (the Flower ServerApp and ClientApp), `rounds`
(the server's rounds) and `launch` (simulation and localhost deployment) import `flwr`.
"""
