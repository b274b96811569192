"""Where rows come from. Every source yields *rows* (rows.py), one dict per input image, and a
PCollection of quarantine entries for inputs it could not turn into a row:

    files.py      s3:// prefixes and local directories, in one of three layouts:
                  labels.py (a labels file), folders.py (a folder per class),
                  attributes.py (an attribute file beside each image); listing.py lists them
    cassandra/    a table with one image per row (config, connection, token ring, reads)

Sources import the dataset contract and Beam, never the job's steps."""
