-- Monq 6.0.0: userspace configuration (illustrative)
UPDATE userspaces SET routing = 'v6';
