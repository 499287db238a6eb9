-- caller.sql: csv_caller_is_service(), the one test of "is this the service role" that every other file uses.

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
