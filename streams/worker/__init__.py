"""The worker: the Faust app, the hand-off of fetched batches (the only contact with Faust's
internals), the processor that turns a batch into updates, timers, rollout and the control topic."""
