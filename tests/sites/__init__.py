"""Small programmable web sites that show behaviour the real stack's Roundcube cannot show."""
