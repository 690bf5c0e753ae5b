"""Training: preparing a run, the stage loop, callbacks, the LR range test, resume, SWA and sweeps."""
