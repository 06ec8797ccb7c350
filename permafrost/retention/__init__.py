"""What stays and what goes: the plan, carrying it out, pins, bucket lifecycle rules."""
