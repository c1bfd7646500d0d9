import torch

# One thread: the tests' tensors are small, and on a 2-core machine that is busy with anything
# else two OpenMP threads stall for a scheduler quantum per op (measured up to 100× slower).
torch.set_num_threads(1)
