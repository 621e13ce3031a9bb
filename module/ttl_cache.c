/* The module's small TTL caches (issue #17). */
