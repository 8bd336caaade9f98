"""Nurture service: email/SMS sequences for leads not converted after 30 days."""
