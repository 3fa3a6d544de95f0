CREATE TABLE public.agent_dispatches (
    instruction_id uuid NOT NULL,
    agent text NOT NULL,
    worker_id text NOT NULL,
    token_sha256 text,
    remote_status text,
    state_json jsonb DEFAULT '{}'::jsonb NOT NULL,
    created_at timestamp with time zone NOT NULL,
    updated_at timestamp with time zone NOT NULL,
    CONSTRAINT agent_dispatches_agent_check CHECK ((agent = ANY (ARRAY['builtin'::text, 'external'::text]))),
    CONSTRAINT agent_dispatches_state_json_check CHECK ((jsonb_typeof(state_json) = 'object'::text))
);

CREATE TABLE public.agent_instruction_events (
    id uuid NOT NULL,
    instruction_id uuid NOT NULL,
    event_type text NOT NULL,
    event_payload_json jsonb DEFAULT '{}'::jsonb NOT NULL,
    created_at timestamp with time zone NOT NULL,
    CONSTRAINT agent_instruction_events_event_payload_json_check CHECK ((jsonb_typeof(event_payload_json) = 'object'::text)),
    CONSTRAINT agent_instruction_events_event_type_check CHECK ((event_type = ANY (ARRAY['queued'::text, 'started'::text, 'log'::text, 'result'::text, 'error'::text, 'status_change'::text])))
);

CREATE TABLE public.agent_instructions (
    id uuid NOT NULL,
    project_id uuid NOT NULL,
    session_id uuid,
    message_id uuid,
    instruction_type text NOT NULL,
    payload_json jsonb NOT NULL,
    status text NOT NULL,
    priority integer DEFAULT 100 NOT NULL,
    requires_confirmation boolean DEFAULT false NOT NULL,
    confirmed_by_user_id uuid,
    queued_at timestamp with time zone,
    started_at timestamp with time zone,
    finished_at timestamp with time zone,
    created_at timestamp with time zone NOT NULL,
    updated_at timestamp with time zone NOT NULL,
    CONSTRAINT agent_instructions_instruction_type_check CHECK ((instruction_type = ANY (ARRAY['pipeline_run'::text, 'asset_edit'::text, 'qa_check'::text, 'storage_sync'::text, 'custom'::text]))),
    CONSTRAINT agent_instructions_payload_json_check CHECK ((jsonb_typeof(payload_json) = 'object'::text)),
    CONSTRAINT agent_instructions_status_check CHECK ((status = ANY (ARRAY['draft'::text, 'queued'::text, 'running'::text, 'done'::text, 'failed'::text, 'canceled'::text])))
);

CREATE TABLE public.app_users (
    id uuid NOT NULL,
    username text NOT NULL,
    display_name text NOT NULL,
    email text,
    is_active boolean DEFAULT true NOT NULL,
    created_at timestamp with time zone NOT NULL,
    updated_at timestamp with time zone NOT NULL
);

CREATE TABLE public.asset_links (
    id uuid NOT NULL,
    project_id uuid NOT NULL,
    parent_asset_id uuid NOT NULL,
    child_asset_id uuid NOT NULL,
    link_type text NOT NULL,
    created_at timestamp with time zone NOT NULL,
    CONSTRAINT asset_links_link_type_check CHECK ((link_type = ANY (ARRAY['derived_from'::text, 'variant_of'::text, 'mask_for'::text, 'reference_of'::text])))
);

CREATE TABLE public.assets (
    id uuid NOT NULL,
    project_id uuid NOT NULL,
    kind text NOT NULL,
    storage_uri text NOT NULL,
    storage_backend text NOT NULL,
    mime_type text,
    width integer,
    height integer,
    sha256 text,
    metadata_json jsonb DEFAULT '{}'::jsonb NOT NULL,
    created_at timestamp with time zone NOT NULL,
    CONSTRAINT assets_kind_check CHECK ((kind = ANY (ARRAY['input'::text, 'reference'::text, 'generated'::text, 'mask'::text, 'upscaled'::text, 'bg_removed'::text, 'final'::text, 'run_log'::text, 'export'::text, 'other'::text]))),
    CONSTRAINT assets_metadata_json_check CHECK ((jsonb_typeof(metadata_json) = 'object'::text)),
    CONSTRAINT assets_storage_backend_check CHECK ((storage_backend = ANY (ARRAY['local'::text, 's3'::text])))
);

CREATE TABLE public.audit_events (
    id uuid NOT NULL,
    project_id uuid,
    actor_user_id uuid,
    event_code text NOT NULL,
    payload_json jsonb DEFAULT '{}'::jsonb NOT NULL,
    created_at timestamp with time zone NOT NULL,
    CONSTRAINT audit_events_payload_json_check CHECK ((jsonb_typeof(payload_json) = 'object'::text))
);

CREATE TABLE public.characters (
    id uuid NOT NULL,
    project_id uuid NOT NULL,
    code text NOT NULL,
    name text NOT NULL,
    bio text DEFAULT ''::text NOT NULL,
    identity_constraints_json jsonb DEFAULT '{}'::jsonb NOT NULL,
    created_at timestamp with time zone NOT NULL,
    updated_at timestamp with time zone NOT NULL,
    CONSTRAINT characters_identity_constraints_json_check CHECK ((jsonb_typeof(identity_constraints_json) = 'object'::text))
);

CREATE TABLE public.chat_messages (
    id uuid NOT NULL,
    session_id uuid NOT NULL,
    role text NOT NULL,
    content_text text NOT NULL,
    content_json jsonb DEFAULT '{}'::jsonb NOT NULL,
    voice_asset_id uuid,
    token_usage_json jsonb DEFAULT '{}'::jsonb NOT NULL,
    created_at timestamp with time zone NOT NULL,
    CONSTRAINT chat_messages_content_json_check CHECK ((jsonb_typeof(content_json) = 'object'::text)),
    CONSTRAINT chat_messages_role_check CHECK ((role = ANY (ARRAY['user'::text, 'assistant'::text, 'system'::text, 'tool'::text]))),
    CONSTRAINT chat_messages_token_usage_json_check CHECK ((jsonb_typeof(token_usage_json) = 'object'::text))
);

CREATE TABLE public.chat_sessions (
    id uuid NOT NULL,
    project_id uuid NOT NULL,
    user_id uuid NOT NULL,
    title text DEFAULT ''::text NOT NULL,
    status text NOT NULL,
    context_json jsonb DEFAULT '{}'::jsonb NOT NULL,
    created_at timestamp with time zone NOT NULL,
    updated_at timestamp with time zone NOT NULL,
    CONSTRAINT chat_sessions_context_json_check CHECK ((jsonb_typeof(context_json) = 'object'::text)),
    CONSTRAINT chat_sessions_status_check CHECK ((status = ANY (ARRAY['active'::text, 'archived'::text])))
);

CREATE TABLE public.cost_events (
    id uuid NOT NULL,
    project_id uuid NOT NULL,
    run_id uuid,
    provider_code text NOT NULL,
    operation_code text NOT NULL,
    units numeric(18,6) DEFAULT 0 NOT NULL,
    cost_usd numeric(18,6) DEFAULT 0 NOT NULL,
    currency text DEFAULT 'USD'::text NOT NULL,
    meta_json jsonb DEFAULT '{}'::jsonb NOT NULL,
    created_at timestamp with time zone NOT NULL,
    CONSTRAINT cost_events_meta_json_check CHECK ((jsonb_typeof(meta_json) = 'object'::text))
);

CREATE TABLE public.project_api_secrets (
    id uuid NOT NULL,
    project_id uuid NOT NULL,
    provider_code text NOT NULL,
    secret_name text NOT NULL,
    secret_ciphertext text NOT NULL,
    kms_key_ref text,
    created_at timestamp with time zone NOT NULL,
    updated_at timestamp with time zone NOT NULL
);

CREATE TABLE public.project_exports (
    id uuid NOT NULL,
    project_id uuid NOT NULL,
    export_asset_id uuid,
    format text NOT NULL,
    sha256 text,
    created_at timestamp with time zone NOT NULL,
    CONSTRAINT project_exports_format_check CHECK ((format = ANY (ARRAY['tar.gz'::text, 'zip'::text, 'folder'::text])))
);

CREATE TABLE public.project_storage (
    id uuid NOT NULL,
    project_id uuid NOT NULL,
    local_base_dir text DEFAULT 'var/projects'::text NOT NULL,
    local_project_root text,
    s3_enabled boolean DEFAULT false NOT NULL,
    s3_bucket text,
    s3_prefix text,
    s3_region text,
    s3_profile text,
    s3_endpoint_url text,
    created_at timestamp with time zone NOT NULL,
    updated_at timestamp with time zone NOT NULL
);

CREATE TABLE public.projects (
    id uuid NOT NULL,
    owner_user_id uuid NOT NULL,
    slug text NOT NULL,
    name text NOT NULL,
    description text DEFAULT ''::text NOT NULL,
    status text NOT NULL,
    settings_json jsonb DEFAULT '{}'::jsonb NOT NULL,
    created_at timestamp with time zone NOT NULL,
    updated_at timestamp with time zone NOT NULL,
    CONSTRAINT projects_settings_json_check CHECK ((jsonb_typeof(settings_json) = 'object'::text)),
    CONSTRAINT projects_status_check CHECK ((status = ANY (ARRAY['active'::text, 'archived'::text, 'deleted'::text])))
);

CREATE TABLE public.prompt_templates (
    id uuid NOT NULL,
    project_id uuid NOT NULL,
    name text NOT NULL,
    stage text NOT NULL,
    template_text text NOT NULL,
    version integer NOT NULL,
    is_active boolean DEFAULT true NOT NULL,
    created_at timestamp with time zone NOT NULL
);

CREATE TABLE public.provider_accounts (
    id uuid NOT NULL,
    project_id uuid NOT NULL,
    provider_code text NOT NULL,
    is_enabled boolean DEFAULT true NOT NULL,
    config_json jsonb DEFAULT '{}'::jsonb NOT NULL,
    created_at timestamp with time zone NOT NULL,
    updated_at timestamp with time zone NOT NULL,
    CONSTRAINT provider_accounts_config_json_check CHECK ((jsonb_typeof(config_json) = 'object'::text))
);

CREATE TABLE public.provider_calls (
    id uuid NOT NULL,
    project_id uuid NOT NULL,
    run_id uuid,
    call_id text NOT NULL,
    provider_code text NOT NULL,
    operation_code text NOT NULL,
    attempt integer NOT NULL,
    outcome text NOT NULL,
    http_status integer,
    error_code text,
    error_message text,
    latency_ms integer NOT NULL,
    meta_json jsonb DEFAULT '{}'::jsonb NOT NULL,
    created_at timestamp with time zone NOT NULL,
    CONSTRAINT provider_calls_meta_json_check CHECK ((jsonb_typeof(meta_json) = 'object'::text)),
    CONSTRAINT provider_calls_outcome_check CHECK ((outcome = ANY (ARRAY['ok'::text, 'error'::text, 'canceled'::text])))
);

CREATE TABLE public.quality_reports (
    id uuid NOT NULL,
    project_id uuid NOT NULL,
    run_id uuid,
    job_id uuid,
    candidate_id uuid,
    report_type text NOT NULL,
    summary_json jsonb NOT NULL,
    created_at timestamp with time zone NOT NULL,
    CONSTRAINT quality_reports_report_type_check CHECK ((report_type = ANY (ARRAY['output_guard'::text, 'model_score'::text, 'human_review'::text]))),
    CONSTRAINT quality_reports_summary_json_check CHECK ((jsonb_typeof(summary_json) = 'object'::text))
);

CREATE TABLE public.reference_items (
    id uuid NOT NULL,
    reference_set_id uuid NOT NULL,
    asset_id uuid NOT NULL,
    weight numeric(8,4) DEFAULT 1.0 NOT NULL,
    notes text DEFAULT ''::text NOT NULL,
    created_at timestamp with time zone NOT NULL
);

CREATE TABLE public.reference_sets (
    id uuid NOT NULL,
    project_id uuid NOT NULL,
    name text NOT NULL,
    kind text NOT NULL,
    metadata_json jsonb DEFAULT '{}'::jsonb NOT NULL,
    created_at timestamp with time zone NOT NULL,
    updated_at timestamp with time zone NOT NULL,
    CONSTRAINT reference_sets_kind_check CHECK ((kind = ANY (ARRAY['style'::text, 'character'::text, 'scene'::text, 'lighting'::text, 'other'::text]))),
    CONSTRAINT reference_sets_metadata_json_check CHECK ((jsonb_typeof(metadata_json) = 'object'::text))
);

CREATE TABLE public.run_candidates (
    id uuid NOT NULL,
    job_id uuid NOT NULL,
    candidate_index integer NOT NULL,
    status text NOT NULL,
    output_asset_id uuid,
    final_asset_id uuid,
    rank_hard_failures integer DEFAULT 0 NOT NULL,
    rank_soft_warnings integer DEFAULT 0 NOT NULL,
    rank_avg_chroma_exceed numeric(12,6) DEFAULT 0 NOT NULL,
    meta_json jsonb DEFAULT '{}'::jsonb NOT NULL,
    created_at timestamp with time zone NOT NULL,
    CONSTRAINT run_candidates_meta_json_check CHECK ((jsonb_typeof(meta_json) = 'object'::text)),
    CONSTRAINT run_candidates_status_check CHECK ((status = ANY (ARRAY['generated'::text, 'done'::text, 'failed_output_guard'::text, 'failed'::text])))
);

CREATE TABLE public.run_job_claims (
    job_id uuid NOT NULL,
    run_id uuid NOT NULL,
    worker_id text NOT NULL,
    purpose text DEFAULT 'job'::text NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    created_at timestamp with time zone NOT NULL,
    CONSTRAINT run_job_claims_purpose_check CHECK ((purpose = ANY (ARRAY['job'::text, 'finish'::text])))
);

CREATE TABLE public.run_jobs (
    id uuid NOT NULL,
    run_id uuid NOT NULL,
    job_key text NOT NULL,
    status text NOT NULL,
    prompt_text text NOT NULL,
    selected_candidate_index integer,
    final_asset_id uuid,
    meta_json jsonb DEFAULT '{}'::jsonb NOT NULL,
    created_at timestamp with time zone NOT NULL,
    CONSTRAINT run_jobs_meta_json_check CHECK ((jsonb_typeof(meta_json) = 'object'::text)),
    CONSTRAINT run_jobs_status_check CHECK ((status = ANY (ARRAY['planned'::text, 'running'::text, 'done'::text, 'failed_output_guard'::text, 'failed'::text])))
);

CREATE TABLE public.runs (
    id uuid NOT NULL,
    project_id uuid NOT NULL,
    run_mode text NOT NULL,
    status text NOT NULL,
    stage text,
    time_of_day text,
    weather text,
    model_name text,
    provider_code text,
    settings_snapshot_json jsonb DEFAULT '{}'::jsonb NOT NULL,
    started_at timestamp with time zone,
    finished_at timestamp with time zone,
    created_at timestamp with time zone NOT NULL,
    CONSTRAINT runs_run_mode_check CHECK ((run_mode = ANY (ARRAY['dry'::text, 'run'::text]))),
    CONSTRAINT runs_settings_snapshot_json_check CHECK ((jsonb_typeof(settings_snapshot_json) = 'object'::text)),
    CONSTRAINT runs_status_check CHECK ((status = ANY (ARRAY['planned'::text, 'running'::text, 'done'::text, 'failed'::text, 'partial'::text])))
);

CREATE TABLE public.schema_migrations (
    version integer NOT NULL,
    name text NOT NULL,
    applied_at timestamp with time zone NOT NULL
);

CREATE TABLE public.storage_sync_objects (
    id uuid NOT NULL,
    project_id uuid NOT NULL,
    path text NOT NULL,
    sha256 text NOT NULL,
    size_bytes numeric(20,0) NOT NULL,
    etag text,
    mtime_ns numeric(20,0),
    synced_at timestamp with time zone NOT NULL
);

CREATE TABLE public.style_guides (
    id uuid NOT NULL,
    project_id uuid NOT NULL,
    name text NOT NULL,
    description text DEFAULT ''::text NOT NULL,
    rules_json jsonb DEFAULT '{}'::jsonb NOT NULL,
    is_default boolean DEFAULT false NOT NULL,
    created_at timestamp with time zone NOT NULL,
    updated_at timestamp with time zone NOT NULL,
    CONSTRAINT style_guides_rules_json_check CHECK ((jsonb_typeof(rules_json) = 'object'::text))
);

CREATE TABLE public.voice_requests (
    id uuid NOT NULL,
    project_id uuid NOT NULL,
    session_id uuid,
    message_id uuid,
    direction text NOT NULL,
    provider_code text NOT NULL,
    input_asset_id uuid,
    output_asset_id uuid,
    status text NOT NULL,
    latency_ms integer,
    meta_json jsonb DEFAULT '{}'::jsonb NOT NULL,
    created_at timestamp with time zone NOT NULL,
    CONSTRAINT voice_requests_direction_check CHECK ((direction = ANY (ARRAY['stt'::text, 'tts'::text]))),
    CONSTRAINT voice_requests_meta_json_check CHECK ((jsonb_typeof(meta_json) = 'object'::text)),
    CONSTRAINT voice_requests_status_check CHECK ((status = ANY (ARRAY['queued'::text, 'running'::text, 'done'::text, 'failed'::text])))
);

ALTER TABLE ONLY public.agent_dispatches
    ADD CONSTRAINT agent_dispatches_pkey PRIMARY KEY (instruction_id);

ALTER TABLE ONLY public.agent_instruction_events
    ADD CONSTRAINT agent_instruction_events_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.agent_instructions
    ADD CONSTRAINT agent_instructions_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.app_users
    ADD CONSTRAINT app_users_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.app_users
    ADD CONSTRAINT app_users_username_key UNIQUE (username);

ALTER TABLE ONLY public.asset_links
    ADD CONSTRAINT asset_links_parent_asset_id_child_asset_id_link_type_key UNIQUE (parent_asset_id, child_asset_id, link_type);

ALTER TABLE ONLY public.asset_links
    ADD CONSTRAINT asset_links_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.assets
    ADD CONSTRAINT assets_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.audit_events
    ADD CONSTRAINT audit_events_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.characters
    ADD CONSTRAINT characters_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.characters
    ADD CONSTRAINT characters_project_id_code_key UNIQUE (project_id, code);

ALTER TABLE ONLY public.chat_messages
    ADD CONSTRAINT chat_messages_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.chat_sessions
    ADD CONSTRAINT chat_sessions_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.cost_events
    ADD CONSTRAINT cost_events_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.project_api_secrets
    ADD CONSTRAINT project_api_secrets_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.project_api_secrets
    ADD CONSTRAINT project_api_secrets_project_id_provider_code_secret_name_key UNIQUE (project_id, provider_code, secret_name);

ALTER TABLE ONLY public.project_exports
    ADD CONSTRAINT project_exports_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.project_storage
    ADD CONSTRAINT project_storage_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.project_storage
    ADD CONSTRAINT project_storage_project_id_key UNIQUE (project_id);

ALTER TABLE ONLY public.projects
    ADD CONSTRAINT projects_owner_user_id_slug_key UNIQUE (owner_user_id, slug);

ALTER TABLE ONLY public.projects
    ADD CONSTRAINT projects_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.prompt_templates
    ADD CONSTRAINT prompt_templates_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.provider_accounts
    ADD CONSTRAINT provider_accounts_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.provider_accounts
    ADD CONSTRAINT provider_accounts_project_id_provider_code_key UNIQUE (project_id, provider_code);

ALTER TABLE ONLY public.provider_calls
    ADD CONSTRAINT provider_calls_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.quality_reports
    ADD CONSTRAINT quality_reports_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.reference_items
    ADD CONSTRAINT reference_items_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.reference_items
    ADD CONSTRAINT reference_items_reference_set_id_asset_id_key UNIQUE (reference_set_id, asset_id);

ALTER TABLE ONLY public.reference_sets
    ADD CONSTRAINT reference_sets_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.run_candidates
    ADD CONSTRAINT run_candidates_job_id_candidate_index_key UNIQUE (job_id, candidate_index);

ALTER TABLE ONLY public.run_candidates
    ADD CONSTRAINT run_candidates_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.run_job_claims
    ADD CONSTRAINT run_job_claims_pkey PRIMARY KEY (job_id);

ALTER TABLE ONLY public.run_jobs
    ADD CONSTRAINT run_jobs_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.run_jobs
    ADD CONSTRAINT run_jobs_run_id_job_key_key UNIQUE (run_id, job_key);

ALTER TABLE ONLY public.runs
    ADD CONSTRAINT runs_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.schema_migrations
    ADD CONSTRAINT schema_migrations_pkey PRIMARY KEY (version);

ALTER TABLE ONLY public.storage_sync_objects
    ADD CONSTRAINT storage_sync_objects_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.storage_sync_objects
    ADD CONSTRAINT storage_sync_objects_project_id_path_key UNIQUE (project_id, path);

ALTER TABLE ONLY public.style_guides
    ADD CONSTRAINT style_guides_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.voice_requests
    ADD CONSTRAINT voice_requests_pkey PRIMARY KEY (id);

CREATE INDEX ix_agent_instruction_events_instruction_created ON public.agent_instruction_events USING btree (instruction_id, created_at);

CREATE INDEX ix_agent_instructions_project_status ON public.agent_instructions USING btree (project_id, status, priority, created_at DESC);

CREATE INDEX ix_asset_links_project_child ON public.asset_links USING btree (project_id, child_asset_id);

CREATE INDEX ix_assets_project_created ON public.assets USING btree (project_id, created_at DESC, id DESC);

CREATE INDEX ix_assets_project_kind_created ON public.assets USING btree (project_id, kind, created_at DESC);

CREATE INDEX ix_assets_project_kind_created_id ON public.assets USING btree (project_id, kind, created_at DESC, id DESC);

CREATE INDEX ix_assets_project_sha256 ON public.assets USING btree (project_id, sha256);

CREATE INDEX ix_audit_events_project_created ON public.audit_events USING btree (project_id, created_at DESC, id DESC);

CREATE INDEX ix_chat_messages_session_created ON public.chat_messages USING btree (session_id, created_at);

CREATE INDEX ix_chat_sessions_project_updated ON public.chat_sessions USING btree (project_id, updated_at DESC);

CREATE INDEX ix_cost_events_project_created ON public.cost_events USING btree (project_id, created_at DESC);

CREATE INDEX ix_cost_events_run ON public.cost_events USING btree (run_id, created_at);

CREATE INDEX ix_projects_owner_slug ON public.projects USING btree (owner_user_id, slug);

CREATE INDEX ix_provider_calls_project_created ON public.provider_calls USING btree (project_id, created_at DESC, id DESC);

CREATE INDEX ix_provider_calls_run ON public.provider_calls USING btree (run_id, created_at);

CREATE INDEX ix_quality_reports_project_created ON public.quality_reports USING btree (project_id, created_at DESC);

CREATE INDEX ix_run_candidates_job_index ON public.run_candidates USING btree (job_id, candidate_index);

CREATE INDEX ix_run_job_claims_run ON public.run_job_claims USING btree (run_id, expires_at);

CREATE INDEX ix_run_jobs_run_status ON public.run_jobs USING btree (run_id, status);

CREATE INDEX ix_runs_project_created ON public.runs USING btree (project_id, created_at DESC);

CREATE INDEX ix_voice_requests_project_status ON public.voice_requests USING btree (project_id, status, created_at DESC);

ALTER TABLE ONLY public.agent_dispatches
    ADD CONSTRAINT agent_dispatches_instruction_id_fkey FOREIGN KEY (instruction_id) REFERENCES public.agent_instructions(id) ON DELETE CASCADE;

ALTER TABLE ONLY public.agent_instruction_events
    ADD CONSTRAINT agent_instruction_events_instruction_id_fkey FOREIGN KEY (instruction_id) REFERENCES public.agent_instructions(id) ON DELETE CASCADE;

ALTER TABLE ONLY public.agent_instructions
    ADD CONSTRAINT agent_instructions_confirmed_by_user_id_fkey FOREIGN KEY (confirmed_by_user_id) REFERENCES public.app_users(id) ON DELETE SET NULL;

ALTER TABLE ONLY public.agent_instructions
    ADD CONSTRAINT agent_instructions_message_id_fkey FOREIGN KEY (message_id) REFERENCES public.chat_messages(id) ON DELETE SET NULL;

ALTER TABLE ONLY public.agent_instructions
    ADD CONSTRAINT agent_instructions_project_id_fkey FOREIGN KEY (project_id) REFERENCES public.projects(id) ON DELETE CASCADE;

ALTER TABLE ONLY public.agent_instructions
    ADD CONSTRAINT agent_instructions_session_id_fkey FOREIGN KEY (session_id) REFERENCES public.chat_sessions(id) ON DELETE SET NULL;

ALTER TABLE ONLY public.asset_links
    ADD CONSTRAINT asset_links_child_asset_id_fkey FOREIGN KEY (child_asset_id) REFERENCES public.assets(id) ON DELETE CASCADE;

ALTER TABLE ONLY public.asset_links
    ADD CONSTRAINT asset_links_parent_asset_id_fkey FOREIGN KEY (parent_asset_id) REFERENCES public.assets(id) ON DELETE CASCADE;

ALTER TABLE ONLY public.asset_links
    ADD CONSTRAINT asset_links_project_id_fkey FOREIGN KEY (project_id) REFERENCES public.projects(id) ON DELETE CASCADE;

ALTER TABLE ONLY public.assets
    ADD CONSTRAINT assets_project_id_fkey FOREIGN KEY (project_id) REFERENCES public.projects(id) ON DELETE CASCADE;

ALTER TABLE ONLY public.audit_events
    ADD CONSTRAINT audit_events_actor_user_id_fkey FOREIGN KEY (actor_user_id) REFERENCES public.app_users(id) ON DELETE SET NULL;

ALTER TABLE ONLY public.audit_events
    ADD CONSTRAINT audit_events_project_id_fkey FOREIGN KEY (project_id) REFERENCES public.projects(id) ON DELETE SET NULL;

ALTER TABLE ONLY public.characters
    ADD CONSTRAINT characters_project_id_fkey FOREIGN KEY (project_id) REFERENCES public.projects(id) ON DELETE CASCADE;

ALTER TABLE ONLY public.chat_messages
    ADD CONSTRAINT chat_messages_session_id_fkey FOREIGN KEY (session_id) REFERENCES public.chat_sessions(id) ON DELETE CASCADE;

ALTER TABLE ONLY public.chat_messages
    ADD CONSTRAINT chat_messages_voice_asset_id_fkey FOREIGN KEY (voice_asset_id) REFERENCES public.assets(id) ON DELETE SET NULL;

ALTER TABLE ONLY public.chat_sessions
    ADD CONSTRAINT chat_sessions_project_id_fkey FOREIGN KEY (project_id) REFERENCES public.projects(id) ON DELETE CASCADE;

ALTER TABLE ONLY public.chat_sessions
    ADD CONSTRAINT chat_sessions_user_id_fkey FOREIGN KEY (user_id) REFERENCES public.app_users(id) ON DELETE RESTRICT;

ALTER TABLE ONLY public.cost_events
    ADD CONSTRAINT cost_events_project_id_fkey FOREIGN KEY (project_id) REFERENCES public.projects(id) ON DELETE CASCADE;

ALTER TABLE ONLY public.cost_events
    ADD CONSTRAINT cost_events_run_id_fkey FOREIGN KEY (run_id) REFERENCES public.runs(id) ON DELETE SET NULL;

ALTER TABLE ONLY public.project_api_secrets
    ADD CONSTRAINT project_api_secrets_project_id_fkey FOREIGN KEY (project_id) REFERENCES public.projects(id) ON DELETE CASCADE;

ALTER TABLE ONLY public.project_exports
    ADD CONSTRAINT project_exports_export_asset_id_fkey FOREIGN KEY (export_asset_id) REFERENCES public.assets(id) ON DELETE SET NULL;

ALTER TABLE ONLY public.project_exports
    ADD CONSTRAINT project_exports_project_id_fkey FOREIGN KEY (project_id) REFERENCES public.projects(id) ON DELETE CASCADE;

ALTER TABLE ONLY public.project_storage
    ADD CONSTRAINT project_storage_project_id_fkey FOREIGN KEY (project_id) REFERENCES public.projects(id) ON DELETE CASCADE;

ALTER TABLE ONLY public.projects
    ADD CONSTRAINT projects_owner_user_id_fkey FOREIGN KEY (owner_user_id) REFERENCES public.app_users(id) ON DELETE RESTRICT;

ALTER TABLE ONLY public.prompt_templates
    ADD CONSTRAINT prompt_templates_project_id_fkey FOREIGN KEY (project_id) REFERENCES public.projects(id) ON DELETE CASCADE;

ALTER TABLE ONLY public.provider_accounts
    ADD CONSTRAINT provider_accounts_project_id_fkey FOREIGN KEY (project_id) REFERENCES public.projects(id) ON DELETE CASCADE;

ALTER TABLE ONLY public.provider_calls
    ADD CONSTRAINT provider_calls_project_id_fkey FOREIGN KEY (project_id) REFERENCES public.projects(id) ON DELETE CASCADE;

ALTER TABLE ONLY public.provider_calls
    ADD CONSTRAINT provider_calls_run_id_fkey FOREIGN KEY (run_id) REFERENCES public.runs(id) ON DELETE SET NULL;

ALTER TABLE ONLY public.quality_reports
    ADD CONSTRAINT quality_reports_candidate_id_fkey FOREIGN KEY (candidate_id) REFERENCES public.run_candidates(id) ON DELETE SET NULL;

ALTER TABLE ONLY public.quality_reports
    ADD CONSTRAINT quality_reports_job_id_fkey FOREIGN KEY (job_id) REFERENCES public.run_jobs(id) ON DELETE SET NULL;

ALTER TABLE ONLY public.quality_reports
    ADD CONSTRAINT quality_reports_project_id_fkey FOREIGN KEY (project_id) REFERENCES public.projects(id) ON DELETE CASCADE;

ALTER TABLE ONLY public.quality_reports
    ADD CONSTRAINT quality_reports_run_id_fkey FOREIGN KEY (run_id) REFERENCES public.runs(id) ON DELETE SET NULL;

ALTER TABLE ONLY public.reference_items
    ADD CONSTRAINT reference_items_asset_id_fkey FOREIGN KEY (asset_id) REFERENCES public.assets(id) ON DELETE CASCADE;

ALTER TABLE ONLY public.reference_items
    ADD CONSTRAINT reference_items_reference_set_id_fkey FOREIGN KEY (reference_set_id) REFERENCES public.reference_sets(id) ON DELETE CASCADE;

ALTER TABLE ONLY public.reference_sets
    ADD CONSTRAINT reference_sets_project_id_fkey FOREIGN KEY (project_id) REFERENCES public.projects(id) ON DELETE CASCADE;

ALTER TABLE ONLY public.run_candidates
    ADD CONSTRAINT run_candidates_final_asset_id_fkey FOREIGN KEY (final_asset_id) REFERENCES public.assets(id) ON DELETE SET NULL;

ALTER TABLE ONLY public.run_candidates
    ADD CONSTRAINT run_candidates_job_id_fkey FOREIGN KEY (job_id) REFERENCES public.run_jobs(id) ON DELETE CASCADE;

ALTER TABLE ONLY public.run_candidates
    ADD CONSTRAINT run_candidates_output_asset_id_fkey FOREIGN KEY (output_asset_id) REFERENCES public.assets(id) ON DELETE SET NULL;

ALTER TABLE ONLY public.run_job_claims
    ADD CONSTRAINT run_job_claims_job_id_fkey FOREIGN KEY (job_id) REFERENCES public.run_jobs(id) ON DELETE CASCADE;

ALTER TABLE ONLY public.run_job_claims
    ADD CONSTRAINT run_job_claims_run_id_fkey FOREIGN KEY (run_id) REFERENCES public.runs(id) ON DELETE CASCADE;

ALTER TABLE ONLY public.run_jobs
    ADD CONSTRAINT run_jobs_final_asset_id_fkey FOREIGN KEY (final_asset_id) REFERENCES public.assets(id) ON DELETE SET NULL;

ALTER TABLE ONLY public.run_jobs
    ADD CONSTRAINT run_jobs_run_id_fkey FOREIGN KEY (run_id) REFERENCES public.runs(id) ON DELETE CASCADE;

ALTER TABLE ONLY public.runs
    ADD CONSTRAINT runs_project_id_fkey FOREIGN KEY (project_id) REFERENCES public.projects(id) ON DELETE CASCADE;

ALTER TABLE ONLY public.storage_sync_objects
    ADD CONSTRAINT storage_sync_objects_project_id_fkey FOREIGN KEY (project_id) REFERENCES public.projects(id) ON DELETE CASCADE;

ALTER TABLE ONLY public.style_guides
    ADD CONSTRAINT style_guides_project_id_fkey FOREIGN KEY (project_id) REFERENCES public.projects(id) ON DELETE CASCADE;

ALTER TABLE ONLY public.voice_requests
    ADD CONSTRAINT voice_requests_input_asset_id_fkey FOREIGN KEY (input_asset_id) REFERENCES public.assets(id) ON DELETE SET NULL;

ALTER TABLE ONLY public.voice_requests
    ADD CONSTRAINT voice_requests_message_id_fkey FOREIGN KEY (message_id) REFERENCES public.chat_messages(id) ON DELETE SET NULL;

ALTER TABLE ONLY public.voice_requests
    ADD CONSTRAINT voice_requests_output_asset_id_fkey FOREIGN KEY (output_asset_id) REFERENCES public.assets(id) ON DELETE SET NULL;

ALTER TABLE ONLY public.voice_requests
    ADD CONSTRAINT voice_requests_project_id_fkey FOREIGN KEY (project_id) REFERENCES public.projects(id) ON DELETE CASCADE;

ALTER TABLE ONLY public.voice_requests
    ADD CONSTRAINT voice_requests_session_id_fkey FOREIGN KEY (session_id) REFERENCES public.chat_sessions(id) ON DELETE SET NULL;
