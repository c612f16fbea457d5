"""Where sealed, encoded batches land: one folder per sink, listed in `registry`."""
