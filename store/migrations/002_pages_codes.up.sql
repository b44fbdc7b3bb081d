-- The middle stage of Search (store/codes.go): each page's vectors
-- binarised, one sign bit a dimension, 16 bytes a vector, packed in vector
-- order. Search scores candidates by Hamming MaxSim over these and reads
-- the full vectors only for the best of them.
--
-- Pages stored before this migration keep codes NULL: Search sends such
-- candidates straight to the exact rerank, as it did before, so nothing
-- is lost; re-ingesting a document gives its pages codes. (Computing them
-- here, from the fp16 vectors in SQL, would take ~131,000 get_byte calls a
-- page inside the migration's one transaction.)
ALTER TABLE pages ADD COLUMN codes bytea;

-- Sign bits do not compress: out of line, without trying.
ALTER TABLE pages ALTER COLUMN codes SET STORAGE EXTERNAL;
