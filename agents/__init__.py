"""Reinforcement-learning agents (stable-baselines3) for the llmsched environments."""
