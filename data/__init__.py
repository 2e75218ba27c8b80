"""Data files shipped with llmsched-env (traces and calibration grids); see README.md here."""
