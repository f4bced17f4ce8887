"""Encounters (SPEC §8.4.7, Encounter Activity 4.49:2015-08-01) and consultation notes (§8.4.10, Note Activity
4.202:2016-11-01 in the Notes section 2.65:2016-11-01)."""

from __future__ import annotations

from tests.ccda.conftest import NS, converted, tree
from tests.ccda.crafted import assert_valid, bundle, gp_list, observation, outcome, run, section, text_of

ENCOUNTERS = "46240-8"
NOTES = "34109-9"


def _consultation_bundle() -> dict:
    encounter = {"resourceType": "Encounter", "id": "e1", "status": "finished",
                 "identifier": [{"system": "https://supplier.example/id", "value": "e1"}],
                 "type": [{"text": "Telephone consultation"}],
                 "participant": [{"type": [{"coding": [{"code": "PPRF"}]}],
                                  "individual": {"reference": "Practitioner/gp1"}}],
                 "period": {"start": "2024-05-01T10:00:00+00:00"}}
    note = observation("n1", "37331000000100", "Comment note", comment="Chest pain on exertion for 2 weeks")
    heading = gp_list("24781000000107", note, title="History", id="h1", encounter={"reference": "Encounter/e1"})
    heading["id"] = "h1"
    topic = gp_list("25851000000105", heading, title="Chest pain", encounter={"reference": "Encounter/e1"})
    topic["id"] = "t1"
    topic["entry"].append({"item": {"reference": "Observation/missing"}})
    consultation = gp_list("325851000000107", topic, title="Telephone consultation",
                           encounter={"reference": "Encounter/e1"})
    consultation["id"] = "c1"
    primary = gp_list("1149501000000101", encounter)
    return bundle(primary, consultation, topic, heading, encounter, note)


def test_one_encounter_activity_per_consultation_with_period_and_type() -> None:
    enc = section(tree(converted("gp2gp-adaptor/docs-example-response")), ENCOUNTERS)
    activities = enc.xpath("c:entry/c:encounter[c:templateId[@extension='2015-08-01']]", namespaces=NS)
    assert len(activities) == 3
    first = activities[0]  # most recent first
    assert first.xpath("c:effectiveTime/c:low/@value", namespaces=NS) == ["20190601103000+0000"]
    assert first.xpath("c:effectiveTime/c:high/@value", namespaces=NS) == ["20190601103800+0000"]
    assert first.xpath("c:code/@nullFlavor", namespaces=NS) == ["OTH"]  # type is text only
    assert "Surgery Consultation" in text_of(enc)


def test_encounter_performer_and_service_delivery_location_4_32() -> None:
    enc = section(tree(converted("gp2gp-adaptor/gpc-access-structured")), ENCOUNTERS)
    activity = enc.xpath("c:entry/c:encounter", namespaces=NS)[0]
    assert activity.xpath("c:performer/c:assignedEntity/c:assignedPerson/c:name/c:family/text()",
                          namespaces=NS) == ["McAvenue"]
    role = activity.xpath("c:participant[@typeCode='LOC']/c:participantRole", namespaces=NS)[0]
    assert role.get("classCode") == "SDLOC"
    assert role.xpath("c:templateId/@root", namespaces=NS) == ["2.16.840.1.113883.10.20.22.4.32"]
    assert role.xpath("c:playingEntity/c:name/text()", namespaces=NS) == ["EMIS Test Practice Location"]


def test_consultation_list_warnings_are_in_the_encounters_narrative() -> None:
    enc = section(tree(converted("gp2gp-adaptor/gpc-access-structured")), ENCOUNTERS)
    assert enc.xpath("c:text/c:paragraph[@styleCode='Bold'][contains(., 'Confidential items')]", namespaces=NS)


def test_note_activity_per_consultation_reads_the_consultation_and_links_to_its_encounter() -> None:
    root = tree(converted("gp2gp-adaptor/docs-example-response"))
    notes = section(root, NOTES)
    assert notes.xpath("c:templateId/@extension", namespaces=NS) == ["2016-11-01"]
    acts = notes.xpath("c:entry/c:act", namespaces=NS)
    assert len(acts) == 3
    assert acts[0].xpath("c:code/c:translation/@code", namespaces=NS) == ["11506-3"]
    assert acts[0].xpath("c:author", namespaces=NS)  # SHALL have an author
    narrative = text_of(notes)
    assert "MSE euthymic" in narrative and "History: 2 weeks cough" in narrative
    encounter_ids = set(root.xpath("//c:section[c:code/@code='46240-8']/c:entry/c:encounter/c:id/@root",
                                   namespaces=NS))
    linked = acts[0].xpath("c:entryRelationship[@typeCode='COMP'][@inversionInd='true']/c:encounter/c:id/@root",
                           namespaces=NS)
    assert linked and linked[0] in encounter_ids


def test_crafted_consultation_note_shows_heading_text_and_the_missing_item() -> None:
    conversion, root = run(_consultation_bundle())
    notes = text_of(section(root, NOTES))
    assert "[Chest pain]" in notes
    assert "History: Chest pain on exertion for 2 weeks" in notes
    assert "Item not supplied by the GP system: Observation/missing" in notes
    # the free-text comment is the note's own content: the consultation's Note Activity is its entry (issue 13)
    assert outcome(conversion, "Observation/n1")["outcome"] == "entry"
    assert outcome(conversion, "Observation/n1")["section"] == "notes"
    assert outcome(conversion, "Encounter/e1")["outcome"] == "entry"
    performer = root.xpath("//c:section[c:code/@code='46240-8']//c:performer//c:family/text()", namespaces=NS)
    assert performer == ["Jones"]
    assert_valid(conversion)


def test_empty_consultations_list_gives_sections_with_its_empty_reason() -> None:
    root = tree(converted("gp2gp-adaptor/sampleJson_empty_lists"))
    enc = section(root, ENCOUNTERS)
    assert not enc.xpath("c:entry", namespaces=NS)
    assert "no entries" in text_of(enc)




def test_a_comment_outside_any_consultation_is_its_own_note_activity() -> None:
    comment = observation("n9", "37331000000100", "Comment note", comment="Patient prefers morning appointments")
    conversion, root = run(bundle(gp_list("826501000000100", comment), comment))
    notes = section(root, NOTES)
    acts = notes.xpath("c:entry/c:act[c:templateId/@root='2.16.840.1.113883.10.20.22.4.202']", namespaces=NS)
    assert len(acts) == 1
    assert acts[0].xpath("c:code/c:translation/@code", namespaces=NS) == ["48767-8"]
    assert "Patient prefers morning appointments" in text_of(notes)
    assert outcome(conversion, "Observation/n9")["outcome"] == "entry"
    other = root.xpath("//c:section[c:title='Other GP record entries']", namespaces=NS)
    assert not other or "Patient prefers morning appointments" not in text_of(other[0])  # not repeated there
    assert_valid(conversion)
