-- Monq 6.0.0: schema changes for cl-streams-service (illustrative)
ALTER TABLE settings ADD COLUMN IF NOT EXISTS v6 boolean DEFAULT false;
