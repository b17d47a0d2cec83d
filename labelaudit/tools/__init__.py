"""Side tools built on the pipeline: what cleaning buys (benefit), predict with a
saved model, and the hyper-parameter sweep."""
