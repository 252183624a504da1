"""Facts of the SAM templates for the tests, as JSON on stdout.

    template_facts.py [TEMPLATE ...]    (default: template.yaml global.yaml)

The facts of every template given are merged: functions are keyed by binary
and provisioning templates by logical id, each unique across the templates.

- "templates": the file names read, in order;
- "actions": for each function (by its BuildProperties.Binary), every IAM
  action its policies may grant (both ways of every Fn::If);
- "provisioningTemplates": the provisioning template bodies (the fleet
  template) with their !Sub variables filled in, as JSON text;
- "topicRules": each AWS::IoT::TopicRule by logical id: its SQL and the
  binaries of the functions its Lambda actions invoke;
- "environment": for each function, the names of its environment variables;
- "environmentValues": for each function, the variables set to a literal
  string, with their values; "timeouts": each function's Timeout;
  "memorySizes": each function's MemorySize;
- "iotPolicies": each AWS::IoT::Policy's statements, actions and resources
  (as text, `${Name}` for a Ref); "alarms": each alarm's properties;
- "healthResources": every Route 53 health check and CloudWatch alarm, with
  its logical id as written (for one made by Fn::ForEach, the key with its
  placeholders) and the loops that make it: identifier, collection, and the
  collection parameter's Type and AllowedPattern, and its properties;
- "parameters": for each template, the names of its parameters;
  "parameterDefinitions", "mappings", "outputs": each template's sections
  as written;
- "thingTypes": each AWS::IoT::ThingType by name, with its searchable
  attributes; "thingGroups": the name of each AWS::IoT::ThingGroup;
- "grants": for each function, every Allow statement its policies may hold
  (both ways of every Fn::If): its actions, and its dynamodb:LeadingKeys
  patterns (null when the statement has none);
- "policyStatements": how many policy statements were checked, summed over
  every combination of conditions;
- "policyProblems": each statement, under some combination of the inputs of
  the conditions, whose Resource is missing, empty, holds an empty string or
  a !Sub of an empty parameter; and each policy left with no statement.
  Empty when all is well.

The combinations: every parameter that a condition compares with a literal
takes each literal it is compared with and one value that is none of them
(an empty optional parameter, then a set one); every condition that cannot
be decided from parameters alone (one that compares a parameter with
AWS::Region, say) is taken true and false. Resources whose own Condition is
false are skipped, and a Ref or !Sub of a parameter gives that parameter's
value in the combination.

CloudFormation's short tags (!Ref, !Sub, ...) are read as {"Fn::X": value}.
"""
import itertools
import json
import os
import re
import sys

import yaml


class Loader(yaml.SafeLoader):
    pass


def _tag(loader, tag_suffix, node):
    name = "Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if tag_suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


Loader.add_multi_constructor("!", _tag)

FOREACH = "Fn::ForEach::"
NO_VALUE = {"Ref": "AWS::NoValue"}
HEALTH_TYPES = ("AWS::Route53::HealthCheck", "AWS::CloudWatch::Alarm")


class Removed:
    """What {"Ref": "AWS::NoValue"} resolves to: the key or item goes."""


REMOVED = Removed()


def is_if(value):
    return isinstance(value, dict) and len(value) == 1 and "Fn::If" in value


def statements_of(document):
    statement = document.get("Statement", []) if isinstance(document, dict) else []
    return statement if isinstance(statement, list) else [statement]


def every_branch(value):
    """Every statement a (possibly Fn::If) statement can be, NoValue dropped."""
    if is_if(value):
        _, yes, no = value["Fn::If"]
        return every_branch(yes) + every_branch(no)
    if value == NO_VALUE:
        return []
    return [value]


def policy_documents(kind, properties):
    """(name, document) of every inline policy of a resource, unresolved."""
    if kind == "AWS::Serverless::Function":
        for i, policy in enumerate(properties.get("Policies") or []):
            yield f"Policies[{i}]", policy
    elif kind == "AWS::IAM::Role":
        for i, policy in enumerate(properties.get("Policies") or []):
            if isinstance(policy, dict):
                yield f"Policies[{i}]", policy.get("PolicyDocument")
    elif kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::IoT::Policy"):
        yield "PolicyDocument", properties.get("PolicyDocument")


def actions_of(policies):
    """Every action an Allow statement of the policies may grant."""
    return sorted({action for grant in grants_of(policies) for action in grant["actions"]})


NAME_PROPERTIES = {
    "AWS::IoT::ThingType": "ThingTypeName",
    "AWS::IoT::ThingGroup": "ThingGroupName",
}


def sub_text(value, resources):
    """The text of a !Sub: a variable that refers to a resource with a
    literal name (a thing type, a thing group) gets that name, the others a
    placeholder."""
    sub = value["Fn::Sub"]
    text, variables = (sub, {}) if isinstance(sub, str) else (sub[0], sub[1])
    for name, variable in variables.items():
        filled = f"geoprov-{name}"
        if isinstance(variable, dict) and "Ref" in variable:
            target = resources.get(variable["Ref"]) or {}
            prop = NAME_PROPERTIES.get(target.get("Type"))
            literal = (target.get("Properties") or {}).get(prop)
            if isinstance(literal, str):
                filled = literal
        text = text.replace("${" + name + "}", filled)
    return text


def resolve(value, conditions):
    """value with every Fn::If decided by `conditions` and NoValue removed."""
    if is_if(value):
        name, yes, no = value["Fn::If"]
        return resolve(yes if conditions[name] else no, conditions)
    if value == NO_VALUE:
        return REMOVED
    if isinstance(value, dict):
        resolved = {k: resolve(v, conditions) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not REMOVED}
    if isinstance(value, list):
        resolved = [resolve(v, conditions) for v in value]
        return [v for v in resolved if v is not REMOVED]
    return value


EMPTY_SUB = "<an empty parameter>"


def render(value, parameters=None):
    """A resolved Resource entry as the text it stands for; "" when empty.
    A parameter in `parameters` renders as its value; a !Sub of a parameter
    whose value is empty renders as EMPTY_SUB."""
    parameters = parameters or {}
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        (name, argument), = value.items()
        if name == "Ref":
            if argument in parameters:
                return parameters[argument]
            return "${" + str(argument) + "}"
        if name == "Fn::GetAtt":
            return "${" + ".".join(map(str, argument)) + "}"
        if name == "Fn::Sub":
            text, variables = (argument, {}) if isinstance(argument, str) else argument
            for key, variable in variables.items():
                text = text.replace("${" + key + "}", render(variable, parameters))
            for key, given in parameters.items():
                if "${" + key + "}" in text:
                    if given == "":
                        return EMPTY_SUB
                    text = text.replace("${" + key + "}", given)
            return text
        if name == "Fn::Join":
            separator, items = argument
            if isinstance(items, list):
                return separator.join(render(item, parameters) for item in items)
    if value in ([], {}, None):
        return ""
    return json.dumps(value, sort_keys=True)


def statement_problems(where, statement, parameters):
    if not isinstance(statement, dict):
        return [f"{where}: a statement that is not an object: {statement!r}"]
    if "NotResource" in statement and "Resource" not in statement:
        resources = statement["NotResource"]
    elif "Resource" in statement:
        resources = statement["Resource"]
    else:
        return [f"{where}: no Resource"]
    resources = resources if isinstance(resources, list) else [resources]
    if not resources:
        return [f"{where}: Resource is an empty list"]
    problems = []
    for resource in resources:
        text = render(resource, parameters)
        if not text.strip():
            problems.append(f"{where}: Resource {json.dumps(resource, sort_keys=True)} is empty")
        elif text == EMPTY_SUB:
            problems.append(
                f"{where}: Resource {json.dumps(resource, sort_keys=True)} is a !Sub of an empty parameter"
            )
    return problems


def condition_names(value, found):
    """Every condition named by an Fn::If or a {"Condition": name} in value."""
    if isinstance(value, dict):
        if is_if(value) and isinstance(value["Fn::If"][0], str):
            found.add(value["Fn::If"][0])
        if set(value) == {"Condition"} and isinstance(value["Condition"], str):
            found.add(value["Condition"])
        for item in value.values():
            condition_names(item, found)
    elif isinstance(value, list):
        for item in value:
            condition_names(item, found)
    return found


class Free:
    """A condition that parameters alone do not decide: an input of its own."""


def inputs_of(name, conditions, params, free):
    """Collect the inputs of condition `name`: parameters compared with
    literals (with each literal) in params, undecidable conditions in free."""
    def visit(value, owner):
        if not isinstance(value, dict) or len(value) != 1:
            free.add(owner)
            return
        (fn, argument), = value.items()
        if fn == "Condition":
            inputs_of(argument, conditions, params, free)
        elif fn in ("Fn::Not", "Fn::And", "Fn::Or"):
            for item in argument:
                visit(item, owner)
        elif fn == "Fn::Equals":
            refs = [a["Ref"] for a in argument if isinstance(a, dict) and set(a) == {"Ref"}]
            literals = [a for a in argument if isinstance(a, (str, int))]
            if len(refs) == 1 and len(literals) == 1 and not refs[0].startswith("AWS::"):
                params.setdefault(refs[0], set()).add(str(literals[0]))
            else:
                free.add(owner)
        else:
            free.add(owner)

    visit(conditions[name], name)


def evaluate(name, conditions, values, decided):
    """Condition `name` under the inputs: parameter values and free truths."""
    if name in decided:
        return decided[name]

    def value_of(value):
        (fn, argument), = value.items()
        if fn == "Condition":
            return evaluate(argument, conditions, values, decided)
        if fn == "Fn::Not":
            return not value_of(argument[0])
        if fn == "Fn::And":
            return all(value_of(item) for item in argument)
        if fn == "Fn::Or":
            return any(value_of(item) for item in argument)
        if fn == "Fn::Equals":
            ref = next(a["Ref"] for a in argument if isinstance(a, dict))
            literal = next(str(a) for a in argument if isinstance(a, (str, int)))
            return values[ref] == literal
        raise ValueError(fn)

    decided[name] = value_of(conditions[name])
    return decided[name]


def may_be_empty(parameter):
    """Whether a parameter can be deployed with an empty value."""
    if parameter.get("Type", "String") != "String":
        return False
    if parameter.get("Default") == "":
        return True
    pattern = parameter.get("AllowedPattern")
    return pattern is None or re.fullmatch(pattern, "") is not None


def parameters_in(value, found):
    """Every parameter name a Ref or a !Sub text in value may name."""
    if isinstance(value, dict):
        if set(value) == {"Ref"} and isinstance(value["Ref"], str):
            found.add(value["Ref"])
        if set(value) == {"Fn::Sub"}:
            sub = value["Fn::Sub"]
            text = sub if isinstance(sub, str) else sub[0]
            found.update(re.findall(r"\$\{([A-Za-z0-9:]+)\}", text))
        for item in value.values():
            parameters_in(item, found)
    elif isinstance(value, list):
        for item in value:
            parameters_in(item, found)
    return found


def combinations(names, conditions, optional=()):
    """Every combination of the inputs of the named conditions, and of the
    optional parameters (each empty and set), as (the truth of every
    condition, the parameter values)."""
    params, free = {p: {""} for p in optional}, set()
    for name in names:
        inputs_of(name, conditions, params, free)
    axes = []
    for param, literals in sorted(params.items()):
        # Each literal it is compared with, and a value that is none of them.
        axes.append([(param, literal) for literal in sorted(literals)] + [(param, f"<{param}>")])
    for name in sorted(free):
        axes.append([(name, True), (name, False)])
    for choice in itertools.product(*axes):
        values = {k: v for k, v in choice if k in params}
        decided = {k: v for k, v in choice if k not in params}
        truths = {name: evaluate(name, conditions, values, decided) for name in names}
        yield truths, values


def with_dependencies(names, conditions):
    """names, and every condition they name in turn."""
    found = set(names)
    todo = list(names)
    while todo:
        for name in condition_names(conditions[todo.pop()], set()):
            if name not in found:
                found.add(name)
                todo.append(name)
    return found


def check_policies(label, template, facts):
    conditions = template.get("Conditions") or {}
    resources = {
        k: v for k, v in (template.get("Resources") or {}).items() if not k.startswith(FOREACH)
    }
    for logical_id, resource in resources.items():
        properties = resource.get("Properties") or {}
        documents = list(policy_documents(resource.get("Type"), properties))
        if not documents:
            continue
        used = condition_names([d for _, d in documents], set())
        if "Condition" in resource:
            used.add(resource["Condition"])
        used = with_dependencies(used, conditions)
        declared = template.get("Parameters") or {}
        optional = sorted(
            p for p in parameters_in([d for _, d in documents], set())
            if p in declared and may_be_empty(declared[p])
        )
        for truths, values in combinations(sorted(used), conditions, optional):
            if "Condition" in resource and not truths[resource["Condition"]]:
                continue
            named = ",".join(f"{c}={'true' if truths[c] else 'false'}" for c in sorted(truths))
            for name, document in documents:
                document = resolve(document, truths)
                if document is REMOVED or not isinstance(document, dict):
                    continue  # a managed policy name, a SAM policy template, or none
                if "Statement" not in document:
                    continue  # a SAM policy template such as {"DynamoDBCrudPolicy": ...}
                statements = statements_of(document)
                where = f"{label} {logical_id}.{name} under [{named or 'no conditions'}]"
                if not statements:
                    facts["policyProblems"].append(f"{where}: no statement")
                for i, statement in enumerate(statements):
                    facts["policyStatements"] += 1
                    sid = statement.get("Sid", i) if isinstance(statement, dict) else i
                    facts["policyProblems"].extend(
                        statement_problems(f"{where} statement {sid}", statement, values)
                    )


def grants_of(policies):
    """Every Allow statement the policies may hold: actions and LeadingKeys."""
    grants = []
    for policy in policies or []:
        for document in every_branch(policy):
            for statement in statements_of(document):
                for branch in every_branch(statement):
                    if not isinstance(branch, dict) or branch.get("Effect") != "Allow":
                        continue
                    action = branch.get("Action", [])
                    leading = None
                    for operator, keys in (branch.get("Condition") or {}).items():
                        if "dynamodb:LeadingKeys" in keys:
                            leading = {"operator": operator, "patterns": keys["dynamodb:LeadingKeys"]}
                    grants.append({
                        "actions": [action] if isinstance(action, str) else action,
                        "leadingKeys": leading,
                    })
    return grants


def health_resources(label, template, section, loops=()):
    """Health checks and alarms, through any Fn::ForEach, with their loops."""
    found = []
    for key, value in section.items():
        if key.startswith(FOREACH):
            identifier, collection, body = value
            loop = {"identifier": identifier, "collection": collection}
            if isinstance(collection, dict) and "Ref" in collection:
                parameter = (template.get("Parameters") or {}).get(collection["Ref"], {})
                loop["parameterType"] = parameter.get("Type")
                loop["allowedPattern"] = parameter.get("AllowedPattern")
            found += health_resources(label, template, body, loops + (loop,))
        elif isinstance(value, dict) and value.get("Type") in HEALTH_TYPES:
            found.append(
                {
                    "template": label,
                    "logicalId": key,
                    "type": value["Type"],
                    "loops": list(loops),
                    "properties": value.get("Properties", {}),
                }
            )
    return found


def merge_unique(facts, section, key, value, label):
    if key in facts[section]:
        raise SystemExit(f"{label}: {section} {key} is already in another template")
    facts[section][key] = value


def read(path, facts):
    label = os.path.basename(path)
    with open(path) as f:
        template = yaml.load(f, Loader=Loader)
    facts["templates"].append(label)
    facts["parameters"][label] = sorted(template.get("Parameters") or {})
    facts["parameterDefinitions"][label] = template.get("Parameters") or {}
    facts["mappings"][label] = template.get("Mappings") or {}
    facts["outputs"][label] = template.get("Outputs") or {}
    for logical_id, resource in template["Resources"].items():
        if logical_id.startswith(FOREACH):
            continue
        kind = resource.get("Type")
        properties = resource.get("Properties", {})
        if kind == "AWS::Serverless::Function":
            binary = resource["Metadata"]["BuildProperties"]["Binary"]
            merge_unique(facts, "actions", binary, actions_of(properties.get("Policies")), label)
            merge_unique(facts, "grants", binary, grants_of(properties.get("Policies")), label)
            variables = properties.get("Environment", {}).get("Variables", {})
            merge_unique(facts, "environment", binary, sorted(variables), label)
            literal = {k: v for k, v in variables.items() if isinstance(v, str)}
            merge_unique(facts, "environmentValues", binary, literal, label)
            merge_unique(facts, "timeouts", binary, properties.get("Timeout"), label)
            merge_unique(facts, "memorySizes", binary, properties.get("MemorySize"), label)
        elif kind == "AWS::IoT::ProvisioningTemplate":
            body = sub_text(properties["TemplateBody"], template["Resources"])
            merge_unique(facts, "provisioningTemplates", logical_id, body, label)
        elif kind == "AWS::IoT::CACertificate":
            body = sub_text(properties["RegistrationConfig"]["TemplateBody"], template["Resources"])
            merge_unique(facts, "provisioningTemplates", logical_id, body, label)
        elif kind == "AWS::IoT::ThingType":
            searchable = (properties.get("ThingTypeProperties") or {}).get("SearchableAttributes", [])
            merge_unique(facts, "thingTypes", properties["ThingTypeName"],
                         {"searchableAttributes": searchable}, label)
        elif kind == "AWS::IoT::ThingGroup":
            facts["thingGroups"].append(properties["ThingGroupName"])
        elif kind == "AWS::IoT::Policy":
            statements = []
            for statement in statements_of(properties.get("PolicyDocument")):
                actions = statement.get("Action", [])
                resources = statement.get("Resource", [])
                statements.append({
                    "actions": [actions] if isinstance(actions, str) else actions,
                    "resources": [render(r) for r in (resources if isinstance(resources, list) else [resources])],
                })
            merge_unique(facts, "iotPolicies", logical_id, statements, label)
        elif kind == "AWS::CloudWatch::Alarm":
            merge_unique(facts, "alarms", logical_id, properties, label)
        elif kind == "AWS::IoT::TopicRule":
            payload = properties["TopicRulePayload"]
            functions = []
            for action in payload.get("Actions", []):
                arn = (action.get("Lambda") or {}).get("FunctionArn")
                if isinstance(arn, dict) and "Fn::GetAtt" in arn:
                    target = template["Resources"][arn["Fn::GetAtt"][0]]
                    functions.append(target["Metadata"]["BuildProperties"]["Binary"])
            merge_unique(facts, "topicRules", logical_id,
                         {"sql": payload["Sql"], "functions": functions}, label)
    facts["healthResources"] += health_resources(label, template, template["Resources"])
    check_policies(label, template, facts)


def main(paths):
    facts = {
        "templates": [],
        "actions": {},
        "environment": {},
        "environmentValues": {},
        "timeouts": {},
        "memorySizes": {},
        "iotPolicies": {},
        "alarms": {},
        "topicRules": {},
        "provisioningTemplates": {},
        "parameters": {},
        "thingTypes": {},
        "thingGroups": [],
        "grants": {},
        "healthResources": [],
        "parameterDefinitions": {},
        "mappings": {},
        "outputs": {},
        "policyStatements": 0,
        "policyProblems": [],
    }
    for path in paths:
        read(path, facts)
    json.dump(facts, sys.stdout, indent=2, sort_keys=True)


if __name__ == "__main__":
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    default = [os.path.join(root, name) for name in ("template.yaml", "global.yaml")]
    main(sys.argv[1:] or default)
