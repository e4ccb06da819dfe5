"""The network's math, written once against the array API: layers, loss, gradients, update rules."""
