"""The fused ops, one module each: reference, torch-backend math, torch.library registration, public op."""
