-- Accounts (B2B buying committees, docs/CLICKHOUSE.md "Accounts"): a lead belongs to the account of its email's
-- domain unless that domain is a free-mail one. free_mail_domains holds those domains; add your own with
--   INSERT INTO free_mail_domains (domain) VALUES ('example-mail.com')
-- The views derive everything from leads, so an erased lead leaves its account with the erasure.
--   account_people   lead_id -> account (the email's domain, lower case)
--   account_touches  every touch of every visitor of an account's people
--   account_stages   every conversion of an account's people (newest version)

-- migrate:up
CREATE TABLE IF NOT EXISTS free_mail_domains
(
    domain String COMMENT 'An email domain that names a mail provider, not a company (lower case)'
)
ENGINE = ReplacingMergeTree
ORDER BY domain
COMMENT 'Email domains that do not make an account; insert more as needed';

INSERT INTO free_mail_domains (domain) VALUES
    ('aol.com'), ('fastmail.com'), ('gmail.com'), ('googlemail.com'), ('gmx.com'), ('gmx.de'), ('gmx.net'),
    ('hey.com'), ('hotmail.co.uk'), ('hotmail.com'), ('hotmail.de'), ('hotmail.fr'), ('icloud.com'),
    ('laposte.net'), ('libero.it'), ('live.com'), ('mac.com'), ('mail.com'), ('mail.ru'), ('me.com'),
    ('msn.com'), ('orange.fr'), ('outlook.com'), ('outlook.de'), ('proton.me'), ('protonmail.com'),
    ('qq.com'), ('t-online.de'), ('tutanota.com'), ('web.de'), ('yahoo.co.uk'), ('yahoo.com'), ('yahoo.de'),
    ('yahoo.fr'), ('yandex.com'), ('yandex.ru'), ('zoho.com'), ('163.com'), ('126.com');

CREATE VIEW IF NOT EXISTS account_people AS
SELECT lead_id, lower(splitByChar('@', email)[-1]) AS account, first_identified_at
FROM leads FINAL
WHERE position(email, '@') > 0
  AND lower(splitByChar('@', email)[-1]) NOT IN (SELECT domain FROM free_mail_domains)
COMMENT 'Leads with a company email: lead_id -> account (the email domain)';

CREATE VIEW IF NOT EXISTS account_touches AS
SELECT DISTINCT p.account AS account, p.lead_id AS lead_id, t.touch_id AS touch_id, t.occurred_at AS occurred_at,
       toString(t.channel) AS channel, t.campaign AS campaign
FROM touches AS t FINAL
INNER JOIN (SELECT DISTINCT visitor_id, lead_id FROM identity_links FINAL) AS l ON t.visitor_id = l.visitor_id
INNER JOIN account_people AS p ON p.lead_id = l.lead_id
COMMENT 'Every touch of every person of an account';

CREATE VIEW IF NOT EXISTS account_stages AS
SELECT p.account AS account, c.lead_id AS lead_id, toString(c.stage) AS stage, c.occurred_at AS occurred_at,
       ifNull(c.revenue, toDecimal64(0, 2)) AS revenue
FROM conversions AS c FINAL
INNER JOIN account_people AS p ON p.lead_id = c.lead_id
COMMENT 'Every conversion (newest version) of every person of an account';

-- migrate:down
DROP VIEW IF EXISTS account_stages;
DROP VIEW IF EXISTS account_touches;
DROP VIEW IF EXISTS account_people;
DROP TABLE IF EXISTS free_mail_domains;
