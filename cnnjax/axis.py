"""The name of the device axis that data-parallel collectives reduce over.

Steps are written per device in the pmap style (`jax.lax.pmean(grads, AXIS)`), losses
gather over it (`axis_name=AXIS`) and BatchNorm averages statistics over it under
`global_bn`. It lives apart from the trainer so that models, losses and tasks can name
the axis without importing `cnnjax.train`.
"""

AXIS = "batch"
