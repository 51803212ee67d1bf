"""Ray-free core of the platform: environments and other building blocks."""
