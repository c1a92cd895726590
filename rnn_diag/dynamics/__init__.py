"""Pure maths on tensors: adjoint recursions, cell linearisations, log-space norms."""
