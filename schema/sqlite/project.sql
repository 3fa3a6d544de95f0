CREATE TABLE schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TEXT NOT NULL CHECK (applied_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z')
);

CREATE TABLE app_users (
    id TEXT PRIMARY KEY CHECK (length(id) = 36 AND id = lower(id)),
    username TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    email TEXT,
    is_active INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
    created_at TEXT NOT NULL CHECK (created_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    updated_at TEXT NOT NULL CHECK (updated_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z')
);

CREATE TABLE projects (
    id TEXT PRIMARY KEY CHECK (length(id) = 36 AND id = lower(id)),
    owner_user_id TEXT NOT NULL REFERENCES app_users (id) ON DELETE RESTRICT CHECK (length(owner_user_id) = 36 AND owner_user_id = lower(owner_user_id)),
    slug TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL CHECK (status IN ('active', 'archived', 'deleted')),
    settings_json TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(settings_json) AND json_type(settings_json) = 'object'),
    created_at TEXT NOT NULL CHECK (created_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    updated_at TEXT NOT NULL CHECK (updated_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    UNIQUE (owner_user_id, slug)
);

CREATE TABLE project_storage (
    id TEXT PRIMARY KEY CHECK (length(id) = 36 AND id = lower(id)),
    project_id TEXT NOT NULL UNIQUE REFERENCES projects (id) ON DELETE CASCADE CHECK (length(project_id) = 36 AND project_id = lower(project_id)),
    local_base_dir TEXT NOT NULL DEFAULT 'var/projects',
    local_project_root TEXT,
    s3_enabled INTEGER NOT NULL DEFAULT 0 CHECK (s3_enabled IN (0, 1)),
    s3_bucket TEXT,
    s3_prefix TEXT,
    s3_region TEXT,
    s3_profile TEXT,
    s3_endpoint_url TEXT,
    created_at TEXT NOT NULL CHECK (created_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    updated_at TEXT NOT NULL CHECK (updated_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z')
);

CREATE TABLE provider_accounts (
    id TEXT PRIMARY KEY CHECK (length(id) = 36 AND id = lower(id)),
    project_id TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE CHECK (length(project_id) = 36 AND project_id = lower(project_id)),
    provider_code TEXT NOT NULL,
    is_enabled INTEGER NOT NULL DEFAULT 1 CHECK (is_enabled IN (0, 1)),
    config_json TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(config_json) AND json_type(config_json) = 'object'),
    created_at TEXT NOT NULL CHECK (created_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    updated_at TEXT NOT NULL CHECK (updated_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    UNIQUE (project_id, provider_code)
);

CREATE TABLE project_api_secrets (
    id TEXT PRIMARY KEY CHECK (length(id) = 36 AND id = lower(id)),
    project_id TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE CHECK (length(project_id) = 36 AND project_id = lower(project_id)),
    provider_code TEXT NOT NULL,
    secret_name TEXT NOT NULL,
    secret_ciphertext TEXT NOT NULL,
    kms_key_ref TEXT,
    created_at TEXT NOT NULL CHECK (created_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    updated_at TEXT NOT NULL CHECK (updated_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    UNIQUE (project_id, provider_code, secret_name)
);

CREATE TABLE style_guides (
    id TEXT PRIMARY KEY CHECK (length(id) = 36 AND id = lower(id)),
    project_id TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE CHECK (length(project_id) = 36 AND project_id = lower(project_id)),
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    rules_json TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(rules_json) AND json_type(rules_json) = 'object'),
    is_default INTEGER NOT NULL DEFAULT 0 CHECK (is_default IN (0, 1)),
    created_at TEXT NOT NULL CHECK (created_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    updated_at TEXT NOT NULL CHECK (updated_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z')
);

CREATE TABLE characters (
    id TEXT PRIMARY KEY CHECK (length(id) = 36 AND id = lower(id)),
    project_id TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE CHECK (length(project_id) = 36 AND project_id = lower(project_id)),
    code TEXT NOT NULL,
    name TEXT NOT NULL,
    bio TEXT NOT NULL DEFAULT '',
    identity_constraints_json TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(identity_constraints_json) AND json_type(identity_constraints_json) = 'object'),
    created_at TEXT NOT NULL CHECK (created_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    updated_at TEXT NOT NULL CHECK (updated_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    UNIQUE (project_id, code)
);

CREATE TABLE reference_sets (
    id TEXT PRIMARY KEY CHECK (length(id) = 36 AND id = lower(id)),
    project_id TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE CHECK (length(project_id) = 36 AND project_id = lower(project_id)),
    name TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('style', 'character', 'scene', 'lighting', 'other')),
    metadata_json TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata_json) AND json_type(metadata_json) = 'object'),
    created_at TEXT NOT NULL CHECK (created_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    updated_at TEXT NOT NULL CHECK (updated_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z')
);

CREATE TABLE assets (
    id TEXT PRIMARY KEY CHECK (length(id) = 36 AND id = lower(id)),
    project_id TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE CHECK (length(project_id) = 36 AND project_id = lower(project_id)),
    kind TEXT NOT NULL CHECK (kind IN ('input', 'reference', 'generated', 'mask', 'upscaled', 'bg_removed', 'final', 'run_log', 'export', 'other')),
    storage_uri TEXT NOT NULL,
    storage_backend TEXT NOT NULL CHECK (storage_backend IN ('local', 's3')),
    mime_type TEXT,
    width INTEGER,
    height INTEGER,
    sha256 TEXT,
    metadata_json TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata_json) AND json_type(metadata_json) = 'object'),
    created_at TEXT NOT NULL CHECK (created_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z')
);

CREATE TABLE reference_items (
    id TEXT PRIMARY KEY CHECK (length(id) = 36 AND id = lower(id)),
    reference_set_id TEXT NOT NULL REFERENCES reference_sets (id) ON DELETE CASCADE CHECK (length(reference_set_id) = 36 AND reference_set_id = lower(reference_set_id)),
    asset_id TEXT NOT NULL REFERENCES assets (id) ON DELETE CASCADE CHECK (length(asset_id) = 36 AND asset_id = lower(asset_id)),
    weight NUMERIC(8,4) NOT NULL DEFAULT 1.0,
    notes TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL CHECK (created_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    UNIQUE (reference_set_id, asset_id)
);

CREATE TABLE asset_links (
    id TEXT PRIMARY KEY CHECK (length(id) = 36 AND id = lower(id)),
    project_id TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE CHECK (length(project_id) = 36 AND project_id = lower(project_id)),
    parent_asset_id TEXT NOT NULL REFERENCES assets (id) ON DELETE CASCADE CHECK (length(parent_asset_id) = 36 AND parent_asset_id = lower(parent_asset_id)),
    child_asset_id TEXT NOT NULL REFERENCES assets (id) ON DELETE CASCADE CHECK (length(child_asset_id) = 36 AND child_asset_id = lower(child_asset_id)),
    link_type TEXT NOT NULL CHECK (link_type IN ('derived_from', 'variant_of', 'mask_for', 'reference_of')),
    created_at TEXT NOT NULL CHECK (created_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    UNIQUE (parent_asset_id, child_asset_id, link_type)
);

CREATE TABLE runs (
    id TEXT PRIMARY KEY CHECK (length(id) = 36 AND id = lower(id)),
    project_id TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE CHECK (length(project_id) = 36 AND project_id = lower(project_id)),
    run_mode TEXT NOT NULL CHECK (run_mode IN ('dry', 'run')),
    status TEXT NOT NULL CHECK (status IN ('planned', 'running', 'done', 'failed', 'partial')),
    stage TEXT,
    time_of_day TEXT,
    weather TEXT,
    model_name TEXT,
    provider_code TEXT,
    settings_snapshot_json TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(settings_snapshot_json) AND json_type(settings_snapshot_json) = 'object'),
    started_at TEXT CHECK (started_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    finished_at TEXT CHECK (finished_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    created_at TEXT NOT NULL CHECK (created_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z')
);

CREATE TABLE run_jobs (
    id TEXT PRIMARY KEY CHECK (length(id) = 36 AND id = lower(id)),
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE CHECK (length(run_id) = 36 AND run_id = lower(run_id)),
    job_key TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('planned', 'running', 'done', 'failed_output_guard', 'failed')),
    prompt_text TEXT NOT NULL,
    selected_candidate_index INTEGER,
    final_asset_id TEXT REFERENCES assets (id) ON DELETE SET NULL CHECK (length(final_asset_id) = 36 AND final_asset_id = lower(final_asset_id)),
    meta_json TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(meta_json) AND json_type(meta_json) = 'object'),
    created_at TEXT NOT NULL CHECK (created_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    UNIQUE (run_id, job_key)
);

CREATE TABLE run_candidates (
    id TEXT PRIMARY KEY CHECK (length(id) = 36 AND id = lower(id)),
    job_id TEXT NOT NULL REFERENCES run_jobs (id) ON DELETE CASCADE CHECK (length(job_id) = 36 AND job_id = lower(job_id)),
    candidate_index INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('generated', 'done', 'failed_output_guard', 'failed')),
    output_asset_id TEXT REFERENCES assets (id) ON DELETE SET NULL CHECK (length(output_asset_id) = 36 AND output_asset_id = lower(output_asset_id)),
    final_asset_id TEXT REFERENCES assets (id) ON DELETE SET NULL CHECK (length(final_asset_id) = 36 AND final_asset_id = lower(final_asset_id)),
    rank_hard_failures INTEGER NOT NULL DEFAULT 0,
    rank_soft_warnings INTEGER NOT NULL DEFAULT 0,
    rank_avg_chroma_exceed NUMERIC(12,6) NOT NULL DEFAULT 0,
    meta_json TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(meta_json) AND json_type(meta_json) = 'object'),
    created_at TEXT NOT NULL CHECK (created_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    UNIQUE (job_id, candidate_index)
);

CREATE TABLE quality_reports (
    id TEXT PRIMARY KEY CHECK (length(id) = 36 AND id = lower(id)),
    project_id TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE CHECK (length(project_id) = 36 AND project_id = lower(project_id)),
    run_id TEXT REFERENCES runs (id) ON DELETE SET NULL CHECK (length(run_id) = 36 AND run_id = lower(run_id)),
    job_id TEXT REFERENCES run_jobs (id) ON DELETE SET NULL CHECK (length(job_id) = 36 AND job_id = lower(job_id)),
    candidate_id TEXT REFERENCES run_candidates (id) ON DELETE SET NULL CHECK (length(candidate_id) = 36 AND candidate_id = lower(candidate_id)),
    report_type TEXT NOT NULL CHECK (report_type IN ('output_guard', 'model_score', 'human_review')),
    summary_json TEXT NOT NULL CHECK (json_valid(summary_json) AND json_type(summary_json) = 'object'),
    created_at TEXT NOT NULL CHECK (created_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z')
);

CREATE TABLE prompt_templates (
    id TEXT PRIMARY KEY CHECK (length(id) = 36 AND id = lower(id)),
    project_id TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE CHECK (length(project_id) = 36 AND project_id = lower(project_id)),
    name TEXT NOT NULL,
    stage TEXT NOT NULL,
    template_text TEXT NOT NULL,
    version INTEGER NOT NULL,
    is_active INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
    created_at TEXT NOT NULL CHECK (created_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z')
);

CREATE TABLE cost_events (
    id TEXT PRIMARY KEY CHECK (length(id) = 36 AND id = lower(id)),
    project_id TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE CHECK (length(project_id) = 36 AND project_id = lower(project_id)),
    run_id TEXT REFERENCES runs (id) ON DELETE SET NULL CHECK (length(run_id) = 36 AND run_id = lower(run_id)),
    provider_code TEXT NOT NULL,
    operation_code TEXT NOT NULL,
    units NUMERIC(18,6) NOT NULL DEFAULT 0,
    cost_usd NUMERIC(18,6) NOT NULL DEFAULT 0,
    currency TEXT NOT NULL DEFAULT 'USD',
    meta_json TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(meta_json) AND json_type(meta_json) = 'object'),
    created_at TEXT NOT NULL CHECK (created_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z')
);

CREATE TABLE project_exports (
    id TEXT PRIMARY KEY CHECK (length(id) = 36 AND id = lower(id)),
    project_id TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE CHECK (length(project_id) = 36 AND project_id = lower(project_id)),
    export_asset_id TEXT REFERENCES assets (id) ON DELETE SET NULL CHECK (length(export_asset_id) = 36 AND export_asset_id = lower(export_asset_id)),
    format TEXT NOT NULL CHECK (format IN ('tar.gz', 'zip', 'folder')),
    sha256 TEXT,
    created_at TEXT NOT NULL CHECK (created_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z')
);

CREATE TABLE audit_events (
    id TEXT PRIMARY KEY CHECK (length(id) = 36 AND id = lower(id)),
    project_id TEXT REFERENCES projects (id) ON DELETE SET NULL CHECK (length(project_id) = 36 AND project_id = lower(project_id)),
    actor_user_id TEXT REFERENCES app_users (id) ON DELETE SET NULL CHECK (length(actor_user_id) = 36 AND actor_user_id = lower(actor_user_id)),
    event_code TEXT NOT NULL,
    payload_json TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(payload_json) AND json_type(payload_json) = 'object'),
    created_at TEXT NOT NULL CHECK (created_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z')
);

CREATE TABLE chat_sessions (
    id TEXT PRIMARY KEY CHECK (length(id) = 36 AND id = lower(id)),
    project_id TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE CHECK (length(project_id) = 36 AND project_id = lower(project_id)),
    user_id TEXT NOT NULL REFERENCES app_users (id) ON DELETE RESTRICT CHECK (length(user_id) = 36 AND user_id = lower(user_id)),
    title TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL CHECK (status IN ('active', 'archived')),
    context_json TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(context_json) AND json_type(context_json) = 'object'),
    created_at TEXT NOT NULL CHECK (created_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    updated_at TEXT NOT NULL CHECK (updated_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z')
);

CREATE TABLE chat_messages (
    id TEXT PRIMARY KEY CHECK (length(id) = 36 AND id = lower(id)),
    session_id TEXT NOT NULL REFERENCES chat_sessions (id) ON DELETE CASCADE CHECK (length(session_id) = 36 AND session_id = lower(session_id)),
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'system', 'tool')),
    content_text TEXT NOT NULL,
    content_json TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(content_json) AND json_type(content_json) = 'object'),
    voice_asset_id TEXT REFERENCES assets (id) ON DELETE SET NULL CHECK (length(voice_asset_id) = 36 AND voice_asset_id = lower(voice_asset_id)),
    token_usage_json TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(token_usage_json) AND json_type(token_usage_json) = 'object'),
    created_at TEXT NOT NULL CHECK (created_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z')
);

CREATE TABLE agent_instructions (
    id TEXT PRIMARY KEY CHECK (length(id) = 36 AND id = lower(id)),
    project_id TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE CHECK (length(project_id) = 36 AND project_id = lower(project_id)),
    session_id TEXT REFERENCES chat_sessions (id) ON DELETE SET NULL CHECK (length(session_id) = 36 AND session_id = lower(session_id)),
    message_id TEXT REFERENCES chat_messages (id) ON DELETE SET NULL CHECK (length(message_id) = 36 AND message_id = lower(message_id)),
    instruction_type TEXT NOT NULL CHECK (instruction_type IN ('pipeline_run', 'asset_edit', 'qa_check', 'storage_sync', 'custom')),
    payload_json TEXT NOT NULL CHECK (json_valid(payload_json) AND json_type(payload_json) = 'object'),
    status TEXT NOT NULL CHECK (status IN ('draft', 'queued', 'running', 'done', 'failed', 'canceled')),
    priority INTEGER NOT NULL DEFAULT 100,
    requires_confirmation INTEGER NOT NULL DEFAULT 0 CHECK (requires_confirmation IN (0, 1)),
    confirmed_by_user_id TEXT REFERENCES app_users (id) ON DELETE SET NULL CHECK (length(confirmed_by_user_id) = 36 AND confirmed_by_user_id = lower(confirmed_by_user_id)),
    queued_at TEXT CHECK (queued_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    started_at TEXT CHECK (started_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    finished_at TEXT CHECK (finished_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    created_at TEXT NOT NULL CHECK (created_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    updated_at TEXT NOT NULL CHECK (updated_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z')
);

CREATE TABLE agent_instruction_events (
    id TEXT PRIMARY KEY CHECK (length(id) = 36 AND id = lower(id)),
    instruction_id TEXT NOT NULL REFERENCES agent_instructions (id) ON DELETE CASCADE CHECK (length(instruction_id) = 36 AND instruction_id = lower(instruction_id)),
    event_type TEXT NOT NULL CHECK (event_type IN ('queued', 'started', 'log', 'result', 'error', 'status_change')),
    event_payload_json TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(event_payload_json) AND json_type(event_payload_json) = 'object'),
    created_at TEXT NOT NULL CHECK (created_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z')
);

CREATE TABLE voice_requests (
    id TEXT PRIMARY KEY CHECK (length(id) = 36 AND id = lower(id)),
    project_id TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE CHECK (length(project_id) = 36 AND project_id = lower(project_id)),
    session_id TEXT REFERENCES chat_sessions (id) ON DELETE SET NULL CHECK (length(session_id) = 36 AND session_id = lower(session_id)),
    message_id TEXT REFERENCES chat_messages (id) ON DELETE SET NULL CHECK (length(message_id) = 36 AND message_id = lower(message_id)),
    direction TEXT NOT NULL CHECK (direction IN ('stt', 'tts')),
    provider_code TEXT NOT NULL,
    input_asset_id TEXT REFERENCES assets (id) ON DELETE SET NULL CHECK (length(input_asset_id) = 36 AND input_asset_id = lower(input_asset_id)),
    output_asset_id TEXT REFERENCES assets (id) ON DELETE SET NULL CHECK (length(output_asset_id) = 36 AND output_asset_id = lower(output_asset_id)),
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed')),
    latency_ms INTEGER,
    meta_json TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(meta_json) AND json_type(meta_json) = 'object'),
    created_at TEXT NOT NULL CHECK (created_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z')
);

CREATE INDEX ix_projects_owner_slug ON projects (owner_user_id, slug);

CREATE INDEX ix_runs_project_created ON runs (project_id, created_at DESC);

CREATE INDEX ix_run_jobs_run_status ON run_jobs (run_id, status);

CREATE INDEX ix_run_candidates_job_index ON run_candidates (job_id, candidate_index);

CREATE INDEX ix_assets_project_kind_created ON assets (project_id, kind, created_at DESC);

CREATE INDEX ix_assets_project_sha256 ON assets (project_id, sha256);

CREATE INDEX ix_cost_events_project_created ON cost_events (project_id, created_at DESC);

CREATE INDEX ix_quality_reports_project_created ON quality_reports (project_id, created_at DESC);

CREATE INDEX ix_chat_sessions_project_updated ON chat_sessions (project_id, updated_at DESC);

CREATE INDEX ix_chat_messages_session_created ON chat_messages (session_id, created_at ASC);

CREATE INDEX ix_agent_instructions_project_status ON agent_instructions (project_id, status, priority, created_at DESC);

CREATE INDEX ix_agent_instruction_events_instruction_created ON agent_instruction_events (instruction_id, created_at ASC);

CREATE INDEX ix_voice_requests_project_status ON voice_requests (project_id, status, created_at DESC);

CREATE INDEX ix_assets_project_created ON assets (project_id, created_at DESC, id DESC);

CREATE INDEX ix_audit_events_project_created ON audit_events (project_id, created_at DESC, id DESC);

CREATE INDEX ix_assets_project_kind_created_id ON assets (project_id, kind, created_at DESC, id DESC);

CREATE INDEX ix_asset_links_project_child ON asset_links (project_id, child_asset_id);

CREATE TABLE provider_calls (
    id TEXT PRIMARY KEY CHECK (length(id) = 36 AND id = lower(id)),
    project_id TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE CHECK (length(project_id) = 36 AND project_id = lower(project_id)),
    run_id TEXT REFERENCES runs (id) ON DELETE SET NULL CHECK (length(run_id) = 36 AND run_id = lower(run_id)),
    call_id TEXT NOT NULL,
    provider_code TEXT NOT NULL,
    operation_code TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('ok', 'error', 'canceled')),
    http_status INTEGER,
    error_code TEXT,
    error_message TEXT,
    latency_ms INTEGER NOT NULL,
    meta_json TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(meta_json) AND json_type(meta_json) = 'object'),
    created_at TEXT NOT NULL CHECK (created_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z')
);

CREATE INDEX ix_provider_calls_project_created ON provider_calls (project_id, created_at DESC, id DESC);

CREATE INDEX ix_provider_calls_run ON provider_calls (run_id, created_at ASC);

CREATE INDEX ix_cost_events_run ON cost_events (run_id, created_at ASC);

CREATE TABLE run_job_claims (
    job_id TEXT PRIMARY KEY REFERENCES run_jobs (id) ON DELETE CASCADE CHECK (length(job_id) = 36 AND job_id = lower(job_id)),
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE CHECK (length(run_id) = 36 AND run_id = lower(run_id)),
    worker_id TEXT NOT NULL,
    purpose TEXT NOT NULL DEFAULT 'job' CHECK (purpose IN ('job', 'finish')),
    expires_at TEXT NOT NULL CHECK (expires_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    created_at TEXT NOT NULL CHECK (created_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z')
);

CREATE INDEX ix_run_job_claims_run ON run_job_claims (run_id, expires_at);

CREATE TABLE storage_sync_objects (
    id TEXT PRIMARY KEY CHECK (length(id) = 36 AND id = lower(id)),
    project_id TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE CHECK (length(project_id) = 36 AND project_id = lower(project_id)),
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size_bytes NUMERIC(20,0) NOT NULL,
    etag TEXT,
    mtime_ns NUMERIC(20,0),
    synced_at TEXT NOT NULL CHECK (synced_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    UNIQUE (project_id, path)
);

CREATE TABLE agent_dispatches (
    instruction_id TEXT PRIMARY KEY REFERENCES agent_instructions (id) ON DELETE CASCADE CHECK (length(instruction_id) = 36 AND instruction_id = lower(instruction_id)),
    agent TEXT NOT NULL CHECK (agent IN ('builtin', 'external')),
    worker_id TEXT NOT NULL,
    token_sha256 TEXT,
    remote_status TEXT,
    state_json TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(state_json) AND json_type(state_json) = 'object'),
    created_at TEXT NOT NULL CHECK (created_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z'),
    updated_at TEXT NOT NULL CHECK (updated_at GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9][0-9][0-9][0-9]Z')
);
