"""Host backends: what stands behind an instance (nothing, or a real container)."""


def load_backend(name, sim, options=None):
    if name in (None, "", "none"):
        from .none import NoneBackend
        return NoneBackend(sim, options or {})
    if name == "docker":
        from .docker import DockerBackend  # written separately; see base.py for the contract
        return DockerBackend(sim, options or {})
    raise ValueError(f"unknown hosts backend {name!r} (use none or docker)")
