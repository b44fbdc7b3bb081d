-- Documents and their pages, one row per page.
--
-- A page row holds two encodings of the page's vectors:
--   fde      the binarised fixed-dimensional encoding searched by the HNSW
--            index with Hamming distance (first stage); its width is store's
--            fdeDim and changes only with a migration that re-encodes every
--            page;
--   vectors  the page's full vectors for the exact MaxSim rerank, packed as
--            little-endian IEEE fp16, patches x 128 (2 bytes a value).
-- Every row carries its tenant and every key starts with it.

-- pgvector is created (or found, in whatever schema) by Migrate, which
-- puts its schema on the search_path after the store's own.

CREATE TABLE documents (
    tenant          text        NOT NULL,
    id              uuid        NOT NULL DEFAULT gen_random_uuid(),
    idempotency_key text,                 -- NULL: none
    fingerprint     bytea       NOT NULL, -- sha256 of the request, to tell a retry from a reuse
    metadata        jsonb       NOT NULL DEFAULT '{}',
    state           text        NOT NULL CHECK (state IN ('pending', 'committed')),
    page_count      integer     NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(), -- set again on commit
    updated_at      timestamptz NOT NULL DEFAULT clock_timestamp(), -- last write; pending sweep
    PRIMARY KEY (tenant, id)
);

CREATE UNIQUE INDEX documents_idempotency_key ON documents (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX documents_listing ON documents (tenant, created_at, id) WHERE state = 'committed';
CREATE INDEX documents_pending ON documents (updated_at) WHERE state = 'pending';

CREATE TABLE pages (
    tenant      text    NOT NULL,
    document_id uuid    NOT NULL,
    page        integer NOT NULL CHECK (page >= 1),
    patches     integer NOT NULL CHECK (patches >= 1),
    committed   boolean NOT NULL, -- its document is committed: searchable
    fde         bit(10240) NOT NULL,
    vectors     bytea   NOT NULL,
    PRIMARY KEY (tenant, document_id, page),
    FOREIGN KEY (tenant, document_id) REFERENCES documents (tenant, id) ON DELETE CASCADE
);

-- fp16 vectors do not compress: store them out of line without trying.
ALTER TABLE pages ALTER COLUMN vectors SET STORAGE EXTERNAL;

-- Only committed pages enter the graph: a staged document's pages join it
-- when CommitDocument sets committed, in the commit's transaction.
CREATE INDEX pages_fde_hnsw ON pages USING hnsw (fde bit_hamming_ops) WITH (m = 16, ef_construction = 64)
    WHERE committed;
