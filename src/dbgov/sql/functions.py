"""What the analyzer knows about PostgreSQL's built-in functions, operators and casts.

The parse tree says only that `f(x)` is called; whether f runs SQL text, raises on
bad input or returns a table with known columns is knowledge about PostgreSQL, kept
here in one place. Anything not listed is treated the careful way by the caller
(an unknown operator is a comparison, an unknown set-returning function has
unknown columns).
"""

from __future__ import annotations


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Run SQL text, or read a relation or cursor named by a string: what they touch is
# invisible to the analyzer. Any function whose name starts with "dblink" too.
DYNAMIC_SQL_FUNCTIONS = _names(
    """
    query_to_xml query_to_xmlschema query_to_xml_and_xmlschema
    table_to_xml table_to_xmlschema table_to_xml_and_xmlschema
    schema_to_xml schema_to_xmlschema schema_to_xml_and_xmlschema
    database_to_xml database_to_xmlschema database_to_xml_and_xmlschema
    cursor_to_xml cursor_to_xmlschema ts_stat ts_rewrite
    """
)
DYNAMIC_SQL_PREFIXES = ("dblink",)

# String arguments name settings, files, sequences or relations: what the call does
# (or what policy may want to know) depends on a literal value.
NAME_ARG_FUNCTIONS = _names(
    """
    set_config current_setting pg_notify nextval currval setval pg_stat_file
    pg_file_write pg_relation_size pg_total_relation_size pg_table_size
    pg_indexes_size pg_get_serial_sequence
    """
)
NAME_ARG_PREFIXES = ("has_", "pg_has_", "to_reg", "pg_read_", "pg_ls_", "lo_", "dblink")

# Casts that look a name up in the catalog: '...'::regclass names a relation.
REG_TYPES = _names(
    """
    regclass regproc regprocedure regoper regoperator regtype regnamespace regrole
    regconfig regdictionary regcollation
    """
)

# Casts to these cannot fail, whatever the value.
TEXT_TYPES = _names("text varchar bpchar char name citext unknown")

# Raise on some input values, so an error message reveals the value.
ERROR_PRONE_FUNCTIONS = _names(
    """
    to_number to_date to_timestamp make_date make_time make_timestamp make_timestamptz
    make_interval div mod sqrt ln log log10 power acos asin int2 int4 int8 float4
    float8 numeric date time timestamp timestamptz interval bool json jsonb xml inet
    cidr uuid
    """
)

# The value is a count, not the argument's values.
COUNTING_FUNCTIONS = _names("count")

# Argument positions where no value makes the function raise (short of the 1 GB
# value limit), so computing it over a masked value reveals nothing through an
# error: "all" of them; the "first" only (the others are lengths, positions or
# offsets, which raise when out of range); all but the first ("rest": a format
# string, an object key); the "values" of key/value pairs (keys must not be NULL).
# Every other function, and every other position, is taken as error-prone.
SAFE_ARGUMENTS: dict[str, str] = {
    **dict.fromkeys(
        _names(
            """
            lower upper initcap reverse length char_length character_length octet_length
            bit_length ascii md5 concat concat_ws btrim ltrim rtrim replace translate strpos
            position quote_literal quote_ident quote_nullable to_json to_jsonb row_to_json
            array_to_json json_build_array jsonb_build_array json_agg jsonb_agg array_agg
            string_agg array_to_string max min count first_value last_value unnest
            string_to_table
            """
        ),
        "all",
    ),
    **dict.fromkeys(
        _names(
            "substr substring left right split_part lpad rpad lag lead nth_value "
            "regexp_split_to_table"
        ),
        "first",
    ),
    **dict.fromkeys(_names("format json_object_agg jsonb_object_agg"), "rest"),
    **dict.fromkeys(_names("json_build_object jsonb_build_object"), "values"),
}

# Keep their arguments where a later statement or another session reads them back:
# settings (and ParameterStatus), sequences, advisory locks, large objects.
STORING_FUNCTIONS = _names(
    """
    set_config setval pg_advisory_lock pg_advisory_xact_lock pg_try_advisory_lock
    pg_try_advisory_xact_lock pg_advisory_lock_shared pg_advisory_xact_lock_shared
    pg_try_advisory_lock_shared pg_try_advisory_xact_lock_shared lo_from_bytea lo_put
    """
)

# Binary and unary operators that can raise on some values (overflow, division by
# zero): arithmetic.
ARITHMETIC_OPERATORS = _names("+ - * / % ^")

# Binary operators that compute a value; every other binary operator (=, <, ~~, @>,
# &&, ?, ...) is a comparison: recording a predicate is the safe side.
VALUE_OPERATORS = _names("+ - * / % ^ || -> ->> #> #>> #- & | # <-> <#> <=>")
DIVISION_OPERATORS = _names("/ %")

# Set-returning functions whose output columns are named by OUT parameters.
RECORD_FUNCTIONS: dict[str, tuple[str, ...]] = {
    "json_each": ("key", "value"),
    "jsonb_each": ("key", "value"),
    "json_each_text": ("key", "value"),
    "jsonb_each_text": ("key", "value"),
    "json_array_elements": ("value",),
    "jsonb_array_elements": ("value",),
    "json_array_elements_text": ("value",),
    "jsonb_array_elements_text": ("value",),
}
# Set-returning functions of a base type: one column, named like the alias or the
# function.
SCALAR_FUNCTIONS = _names(
    """
    generate_series generate_subscripts unnest regexp_split_to_table string_to_table
    regexp_matches json_object_keys jsonb_object_keys jsonb_path_query
    """
)

# How many rows they return depends on their arguments' values (in FROM, and as
# set-returning functions in a select list).
SET_RETURNING_FUNCTIONS = (
    SCALAR_FUNCTIONS
    | frozenset(RECORD_FUNCTIONS)
    | _names(
        """
        json_populate_recordset jsonb_populate_recordset json_to_recordset
        jsonb_to_recordset jsonb_path_query_array regexp_matches ts_debug
        """
    )
)

SYSTEM_SCHEMAS = _names("pg_catalog information_schema")
