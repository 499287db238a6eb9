-- 001_platform.sql (baseline): what Supabase provides and csvjobs relies on, created only where it is missing, so
-- the same schema installs on a plain PostgreSQL 15+ and on a Supabase project (where all of this exists already
-- and is left untouched):
--   * the roles anon, authenticated and service_role (service_role bypasses row-level security);
--   * the auth schema with auth.uid(), auth.role() and auth.jwt(), reading the request.jwt.claims setting exactly
--     as Supabase (and PostgREST) define them;
-- Installed first: everything after it may name these roles and functions (csv_caller_is_service(), the one test
-- of "is this the service role", is csvjobs' own and lives in caller.sql).

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
        CREATE ROLE anon NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
        CREATE ROLE authenticated NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
    END IF;
END
$$;

-- The connecting role must be able to SET ROLE to each of them, the way PostgREST's authenticator does. A superuser
-- already can; anyone else needs membership, which only a role with the right to grant it can give.
DO $$
DECLARE
    r text;
BEGIN
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
            IF NOT pg_has_role(current_user, r, 'MEMBER') THEN
                BEGIN
                    EXECUTE format('GRANT %I TO %I', r, current_user);
                EXCEPTION WHEN insufficient_privilege THEN
                    RAISE WARNING 'csvjobs: % cannot be granted role %; ask an administrator to GRANT % TO %',
                        current_user, r, r, current_user;
                END;
            END IF;
        END LOOP;
    END IF;
END
$$;

CREATE SCHEMA IF NOT EXISTS auth;
GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;

DO $$
BEGIN
    IF to_regprocedure('auth.uid()') IS NULL THEN
        CREATE FUNCTION auth.uid() RETURNS uuid
        LANGUAGE sql STABLE
        AS $f$
            SELECT coalesce(
                nullif(current_setting('request.jwt.claim.sub', true), ''),
                (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
            )::uuid
        $f$;
    END IF;
    IF to_regprocedure('auth.role()') IS NULL THEN
        CREATE FUNCTION auth.role() RETURNS text
        LANGUAGE sql STABLE
        AS $f$
            SELECT coalesce(
                nullif(current_setting('request.jwt.claim.role', true), ''),
                (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
            )::text
        $f$;
    END IF;
    IF to_regprocedure('auth.jwt()') IS NULL THEN
        CREATE FUNCTION auth.jwt() RETURNS jsonb
        LANGUAGE sql STABLE
        AS $f$
            SELECT coalesce(
                nullif(current_setting('request.jwt.claim', true), ''),
                nullif(current_setting('request.jwt.claims', true), '')
            )::jsonb
        $f$;
    END IF;
END
$$;
