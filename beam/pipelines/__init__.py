"""The Beam pipelines of the data plane, one module each with ``run(argv)``: TDS (:mod:`.tds`) and BDS (:mod:`.bds`).

Both move chunks of rows (Arrow tables) rather than single rows; :mod:`.chunks` holds the shared I/O.
"""
