//! The forge defaults (the reviewed tables live in [`bottle_contract::egress::forge`], shared
//! with `bottle verify`, which picks its probes from them) and what only the daemon does with
//! them: judging a GitHub GraphQL document's mutations.

pub use bottle_contract::egress::forge::*;

/// The first mutation of a GraphQL request body that is not in `allowed`, or why the body
/// cannot be judged: `Ok(())` when every operation is a query, or a mutation of allowed
/// fields only. Fragments spread into a mutation count as its fields; subscriptions and
/// batches are refused.
pub fn check_graphql(body: &[u8], allowed: &[&str]) -> Result<(), String> {
    use graphql_parser::query::{Definition, OperationDefinition, Selection, SelectionSet};
    let doc: serde_json::Value = serde_json::from_slice(body)
        .map_err(|_| "the GraphQL request is not one JSON object".to_owned())?;
    let query = doc
        .get("query")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| {
            "the GraphQL request has no `query` string (batches are refused)".to_owned()
        })?;
    let parsed = graphql_parser::parse_query::<String>(query)
        .map_err(|e| format!("the GraphQL document does not parse: {e}"))?;
    let fragments: std::collections::HashMap<&str, &SelectionSet<String>> = parsed
        .definitions
        .iter()
        .filter_map(|d| match d {
            Definition::Fragment(f) => Some((f.name.as_str(), &f.selection_set)),
            _ => None,
        })
        .collect();
    fn fields<'a>(
        set: &'a SelectionSet<String>,
        fragments: &std::collections::HashMap<&str, &'a SelectionSet<String>>,
        out: &mut Vec<&'a str>,
        depth: usize,
    ) -> Result<(), String> {
        if depth > 16 {
            return Err("the GraphQL document nests fragments too deep".into());
        }
        for s in &set.items {
            match s {
                Selection::Field(f) => out.push(f.name.as_str()),
                Selection::InlineFragment(i) => {
                    fields(&i.selection_set, fragments, out, depth + 1)?
                }
                Selection::FragmentSpread(sp) => {
                    let set = fragments.get(sp.fragment_name.as_str()).ok_or_else(|| {
                        format!(
                            "the GraphQL document spreads an unknown fragment {}",
                            sp.fragment_name
                        )
                    })?;
                    fields(set, fragments, out, depth + 1)?;
                }
            }
        }
        Ok(())
    }
    for d in &parsed.definitions {
        let Definition::Operation(op) = d else {
            continue;
        };
        match op {
            OperationDefinition::Query(_) | OperationDefinition::SelectionSet(_) => {}
            OperationDefinition::Subscription(_) => {
                return Err("a GraphQL subscription".into());
            }
            OperationDefinition::Mutation(m) => {
                let mut names = Vec::new();
                fields(&m.selection_set, &fragments, &mut names, 0)?;
                if let Some(bad) = names
                    .into_iter()
                    .find(|n| *n != "__typename" && !allowed.contains(n))
                {
                    return Err(format!("the GraphQL mutation `{bad}`"));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graphql_mutations_pass_only_from_the_list() {
        let ok = |q: &str| {
            check_graphql(
                serde_json::json!({"query": q}).to_string().as_bytes(),
                GITHUB_MUTATIONS,
            )
        };
        assert!(ok("query { viewer { login } }").is_ok());
        assert!(ok("{ repository(owner:\"o\", name:\"r\") { id } }").is_ok());
        assert!(ok("mutation { createPullRequest(input:{}) { pullRequest { url } } }").is_ok());
        assert!(ok("mutation M { addComment(input:{}) { __typename } __typename }").is_ok());
        for (q, bad) in [
            (
                "mutation { mergePullRequest(input:{}) { clientMutationId } }",
                "mergePullRequest",
            ),
            (
                "mutation { addComment(input:{}) { __typename } updateRef(input:{}) { __typename } }",
                "updateRef",
            ),
            (
                "mutation { ...F } fragment F on Mutation { createCommitOnBranch(input:{}) { __typename } }",
                "createCommitOnBranch",
            ),
            (
                "mutation { ... on Mutation { deleteRef(input:{}) { __typename } } }",
                "deleteRef",
            ),
            (
                "query Q { viewer { login } } mutation { enablePullRequestAutoMerge(input:{}) { __typename } }",
                "enablePullRequestAutoMerge",
            ),
        ] {
            let e = ok(q).unwrap_err();
            assert!(e.contains(bad), "{q}: {e}");
        }
        for bad in [
            &b"[{\"query\":\"{ a }\"}]"[..],
            b"{\"query\": 1}",
            b"not json",
            b"{\"query\":\"mutation {\"}",
        ] {
            assert!(check_graphql(bad, GITHUB_MUTATIONS).is_err());
        }
        assert!(ok("subscription { x }").is_err());
    }
}
