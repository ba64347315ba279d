"""The store: the only code that talks to LanceDB (the chunks table, its backings on disk and in
object storage, reading and searching with the ACL prefilter, held vectors, index maintenance,
verification)."""
