"""The ways in: `hub run` (`cli`, `results_file`, `report`, `quiet`), `hub serving` (`serving`),
Ray Data (`ray_adapter`) and the demo's sample videos (`samples`). Nothing below imports these.
"""
