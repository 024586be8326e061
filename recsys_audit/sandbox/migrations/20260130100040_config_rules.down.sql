-- Down migration for 20260130100040_config_rules.up.sql.
DROP TABLE IF EXISTS tenant_rules_current;
DROP TABLE IF EXISTS tenant_rule_versions;
DROP TABLE IF EXISTS tenant_configs_current;
DROP TABLE IF EXISTS tenant_config_versions;
