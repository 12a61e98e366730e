"""The seed's example challenge: miners submit scores, weights are each hotkey's best."""
