"""Deploying family members: standard export formats and a serving benchmark."""
