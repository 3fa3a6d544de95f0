"""The project's S3 mirror (SPEC 2.4): push and pull the project's files incrementally, by sha256.

client.py builds the boto3 client from the storage policy; files.py says which files a project holds and hashes
them (cached by size and mtime); plan.py decides what moves; state.py keeps what the mirror is known to hold;
s3.py runs a sync with boto3's transfer manager. Nothing here imports boto3 until a sync runs."""
