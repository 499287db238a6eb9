-- supabase.sql: what Supabase provides and csvjobs relies on, created only where it is missing, so the same schema
-- installs on a plain PostgreSQL 15+ and on a Supabase project (where all of this exists already and is left
-- untouched):
--   * the roles anon, authenticated and service_role (service_role bypasses row-level security);
--   * the auth schema with auth.uid(), auth.role() and auth.jwt(), reading the request.jwt.claims setting exactly
--     as Supabase (and PostgREST) define them;
--   * csv_caller_is_service(), the one test of "is this the service role" that every other file uses.
-- Installed first: everything after it may name these roles and functions.

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

-- Is the caller the service role (or a role that holds it, such as the database owner connecting directly)?
-- Reads the role in force outside any SECURITY DEFINER function: SET ROLE (what PostgREST and csvjobs use) is
-- kept in the 'role' setting, which a definer function does not change; without one it is the session's login
-- role. Claims in request.jwt.claims are not consulted: any signed-in client can write those.
CREATE OR REPLACE FUNCTION csv_caller_is_service() RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT pg_has_role(
        CASE WHEN current_setting('role') = 'none' THEN session_user
             ELSE current_setting('role')::name END,
        'service_role', 'MEMBER');
$$;
