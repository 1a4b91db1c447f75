-- Monq 6.0.0: schema changes for pl-automaton-rules-api-service (illustrative)
ALTER TABLE settings ADD COLUMN IF NOT EXISTS v6 boolean DEFAULT false;
