"""Reading a brief and the structured filters (catalog.briefs, catalog.filters): which words
become which filter, what is refused with a clear 400, and the mood vocabulary rebuilt from
the shared data equals the shipped one."""

from __future__ import annotations

import pytest

from genre_detector.catalog import brief_vocabulary, briefs
from genre_detector.catalog import filters as F
from genre_detector.errors import GenreError
from tests.expected import NINE


def _read(q: str):
    return briefs.parse(q, NINE)


def test_the_issue_brief_reads_as_four_filters():
    r = _read("calm instrumental jazz around 90 BPM")
    assert r.filters.as_dict() == {
        "genre": ["jazz"],
        "mood": {"Q4": 1.0},
        "bpm": [85.0, 95.0],
        "bpm_octave": False,
        "voice": ["instrumental"],
    }
    by = {u["filter"]: u["words"] for u in r.understood}
    assert by == {"genre": "jazz", "mood": "calm", "bpm": "around 90 bpm", "voice": "instrumental"}
    assert r.not_understood == [] and r.ignored == []
    assert "47 clips" in next(u["note"] for u in r.understood if u["filter"] == "mood")


@pytest.mark.parametrize(
    "q, expected",
    [
        ("sad piano in A minor", {"mood": {"Q3": 1.0}, "key": "8A", "instruments": ["piano"]}),
        ("Am", {"key": "8A"}),
        ("F sharp minor", {"key": "11A"}),
        ("Bb major", {"key": "6B"}),
        ("8b compatible", {"key": "8B", "compatible": True}),
        ("slow", {"bpm": [40.0, 85.0]}),
        ("fast", {"bpm": [120.0, 200.0]}),
        ("120-130 bpm", {"bpm": [120.0, 130.0]}),
        ("between 70 and 80 bpm", {"bpm": [70.0, 80.0]}),
        ("~180bpm", {"bpm": [171.0, 189.0]}),
        ("female vocals", {"voice": ["female"]}),
        ("no vocals", {"voice": ["instrumental"]}),
        ("hip hop", {"genre": ["hiphop"]}),
        ("r&b", {"genre": ["rnb"]}),
        ("bitter", {"mood": {"Q3": 0.596, "Q2": 0.404}}),  # 4q.csv: Q3 31, Q2 21 clips
    ],
)
def test_vocabulary(q, expected):
    got = _read(q).filters.as_dict()
    for k, v in expected.items():
        assert got[k] == v, (q, got)


def test_gems_names_ask_for_their_75th_percentile():
    r = _read("tenderness and nostalgia")
    assert dict(r.filters.gems) == {
        "tenderness": brief_vocabulary.GEMS_MINIMUM["tenderness"],
        "nostalgia": brief_vocabulary.GEMS_MINIMUM["nostalgia"],
    }
    assert r.ignored == ["and"]
    # their adjectives too, where the AllMusic data has no reading of its own
    tender = _read("tender solemn piano")
    assert dict(tender.filters.gems) == {
        g: brief_vocabulary.GEMS_MINIMUM[g] for g in ("tenderness", "solemnity")
    }
    assert tender.not_understood == []
    # "nostalgic" is an AllMusic word: the data's quadrants, not the GEMS emotion
    assert not _read("nostalgic").filters.gems and _read("nostalgic").filters.quadrants


def test_several_mood_words_pool_their_clips():
    # gloomy: Q3 97 %; calm: Q4 100 %: pooled Q3 0.49, Q4 0.5 -> both quadrants kept
    r = _read("gloomy calm")
    assert {q for q, _ in r.filters.quadrants} == {"Q3", "Q4"}
    assert abs(sum(w for _, w in r.filters.quadrants) - 1) < 1e-3


def test_unknown_words_are_listed_not_guessed():
    r = _read("calm blorp zzzz jazz")
    assert r.not_understood == ["blorp", "zzzz"]
    assert _read("blorp zzz").understood == []


@pytest.mark.parametrize(
    "q, names",
    [
        ("slow fast", "bpm"),
        ("instrumental female vocals", "voice"),
        ("90 bpm 140 bpm", "bpm"),
        ("jazz blues", "genre"),
        ("A minor C major", "key"),
    ],
)
def test_contradictory_briefs_are_400_naming_the_clash(q, names):
    with pytest.raises(GenreError) as e:
        _read(q)
    assert e.value.code == "bad_parameter" and "contradictory" in e.value.detail
    assert names in e.value.detail


def test_a_brief_over_500_characters_is_refused():
    with pytest.raises(GenreError) as e:
        _read("calm " * 2048)  # 10 KB
    assert e.value.status == 400 and "500" in e.value.detail


@pytest.mark.parametrize(
    "params, field",
    [
        ({"mood": "Q5"}, "mood"),
        ({"mood": "tenderness>=2"}, "mood"),
        ({"mood": "joy>=0.2"}, "mood"),
        ({"bpm": "95-85"}, "bpm"),
        ({"bpm": "fast"}, "bpm"),
        ({"bpm": "1-1000"}, "bpm"),
        ({"bpm_octave": "true"}, "bpm_octave"),
        ({"key": "H minor"}, "key"),
        ({"key": "13A"}, "key"),
        ({"compatible": "true"}, "compatible"),
        ({"voice": "robot"}, "voice"),
        ({"voice": "instrumental,female"}, "voice"),
        ({"genre": "polka"}, "genre"),
    ],
)
def test_structured_filters_refuse_values_out_of_vocabulary(params, field):
    with pytest.raises(GenreError) as e:
        F.from_params(params, NINE)
    assert e.value.code == "bad_parameter" and field in e.value.detail


def test_structured_filters_and_a_brief_merge():
    f = F.from_params(
        {"mood": "Q4,tenderness>=0.4", "bpm": "80-100", "key": "A minor", "compatible": "1"}, NINE
    )
    assert f.camelot_codes == ["8A", "7A", "9A", "8B"]
    merged = f.merge(_read("around 90 bpm jazz").filters)
    assert merged.bpm == (85.0, 95.0) and merged.genres == ("jazz",)
    assert dict(merged.gems) == {"tenderness": 0.4}
    with pytest.raises(GenreError, match="contradictory"):
        f.merge(_read("sad").filters)  # Q4 asked, the brief says Q3
    assert F.Filters.from_dict(merged.as_dict()).as_dict() == merged.as_dict()


def test_camelot_follows_the_wheel():
    assert F.parse_key("C major") == "8B" and F.parse_key("A minor") == "8A"
    assert F.parse_key("E minor") == "9A" and F.parse_key("G major") == "9B"
    assert F.neighbours("12A") == ["12A", "11A", "1A", "12B"]
    assert F.neighbours("1B") == ["1B", "12B", "2B", "1A"]


def test_the_shipped_vocabulary_is_what_the_data_says(data_dir):
    words, gems = briefs.build(
        data_dir / "moods" / "4q.csv", data_dir / "moods" / "emotify_gems.csv"
    )
    assert words == brief_vocabulary.MOOD_WORDS and gems == brief_vocabulary.GEMS_MINIMUM
    assert words["calm"]["quadrants"] == {"Q4": 1.0} and words["angry"]["quadrants"] == {"Q2": 1.0}
    assert all(w["clips"] >= briefs.MIN_CLIPS for w in words.values())
