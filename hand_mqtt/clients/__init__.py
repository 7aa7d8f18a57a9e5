"""The clients: the Python API, the desktop controller, the 3D plot and Home Assistant discovery."""
