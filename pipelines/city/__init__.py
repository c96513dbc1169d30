"""The city: geography (areas, point-to-grid index, GeoJSON), boundary import, the demo city
and the simulator."""
