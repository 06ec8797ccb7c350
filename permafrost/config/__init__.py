"""Configuration: settings from the environment (in sections), env files, schedules."""
