"""Learning: the model, its forward/backward pass, the optimizer step, weight averaging, normalisation, rehearsal, learning-rate schedules, the challenger, prequential metrics."""
