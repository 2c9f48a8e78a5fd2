"""The synthetic data set of ``bench_search.py``: a plan (who exists, how large each
record is) and the records themselves, both pure functions of a seed and a scale.

Patients carry a valid resident ID number (GB 11643: area code, birth date,
sequence number whose parity is the gender, ISO 7064 MOD 11-2 check character) that
agrees with ``birthDate`` and ``gender``, a pinyin name, a mobile number and an
address. Observations are LOINC vital signs and laboratory results with UCUM
quantities, taken at visits spread over ten years (2015-2024, Beijing time);
laboratory visits produce one DiagnosticReport per panel, referencing its results.

Every id is a UUID derived from the seed, so ``build`` and ``run`` regenerate the
same resources independently, and the expected result of any search can be computed
here without asking the server.
"""

from __future__ import annotations

import gzip
import itertools
import json
import random
import unicodedata
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

from fhirserver.model.types import SUPPORTED_TYPES

#: Full size of the data set (Synthea bundles included) at ``--scale 1``.
FULL_PATIENTS = 20_000
FULL_OBSERVATIONS = 200_000
HEAVY_PATIENTS = 5
HEAVY_RANGE = (2_000, 2_400)  # Observations of each heavy patient at scale 1

RID = "https://fhirserver.example/sid/resident-id"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
TAG_SYSTEM = "https://fhirserver.example/bench"
CST = timezone(timedelta(hours=8))
FIRST_DAY, LAST_DAY = date(2015, 1, 1), date(2024, 12, 31)
ID_NAMESPACE = uuid.UUID("6f1c2b8e-5d7a-4e0b-9c3f-2a4d8e6b1f07")
WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)

#: area code -> (province, city, district)
AREAS: dict[str, tuple[str, str, str]] = {
    "110101": ("Beijing", "Beijing", "Dongcheng"), "110102": ("Beijing", "Beijing", "Xicheng"),
    "110105": ("Beijing", "Beijing", "Chaoyang"), "110106": ("Beijing", "Beijing", "Fengtai"),
    "110108": ("Beijing", "Beijing", "Haidian"), "120101": ("Tianjin", "Tianjin", "Heping"),
    "120103": ("Tianjin", "Tianjin", "Hexi"), "310101": ("Shanghai", "Shanghai", "Huangpu"),
    "310104": ("Shanghai", "Shanghai", "Xuhui"), "310105": ("Shanghai", "Shanghai", "Changning"),
    "310106": ("Shanghai", "Shanghai", "Jing'an"), "310115": ("Shanghai", "Shanghai", "Pudong"),
    "320102": ("Jiangsu", "Nanjing", "Xuanwu"), "320106": ("Jiangsu", "Nanjing", "Gulou"),
    "330102": ("Zhejiang", "Hangzhou", "Shangcheng"), "330106": ("Zhejiang", "Hangzhou", "Xihu"),
    "370102": ("Shandong", "Jinan", "Lixia"), "420102": ("Hubei", "Wuhan", "Jiang'an"),
    "420106": ("Hubei", "Wuhan", "Wuchang"), "440103": ("Guangdong", "Guangzhou", "Liwan"),
    "440104": ("Guangdong", "Guangzhou", "Yuexiu"), "440106": ("Guangdong", "Guangzhou", "Tianhe"),
    "440303": ("Guangdong", "Shenzhen", "Luohu"), "440304": ("Guangdong", "Shenzhen", "Futian"),
    "440305": ("Guangdong", "Shenzhen", "Nanshan"), "510104": ("Sichuan", "Chengdu", "Jinjiang"),
    "510105": ("Sichuan", "Chengdu", "Qingyang"), "510107": ("Sichuan", "Chengdu", "Wuhou"),
    "610102": ("Shaanxi", "Xi'an", "Xincheng"), "610113": ("Shaanxi", "Xi'an", "Yanta"),
}

#: Family names, roughly by frequency; drawn with weight 1/sqrt(rank), so that at full
#: size a family name (or a prefix of it) is shared by a few dozen patients.
FAMILY_NAMES = """Wang Li Zhang Liu Chen Yang Huang Zhao Wu Zhou Xu Sun Ma Zhu Hu Guo He Gao Lin Luo
Zheng Liang Xie Song Tang Han Feng Deng Cao Peng Zeng Xiao Tian Dong Yuan Pan Yu Jiang Cai Du Ye
Cheng Wei Su Lu Ding Ren Shen Yao Cui Zhong Tan Fan Jin Shi Liao Jia Xia Fu Fang Zou Xiong Bai
Meng Qin Qiu Hou Yin Xue Yan Duan Lei Long Tao Mao Hao Gu Gong Shao Wan Qian Dai Mo Kong Xiang
Chang Kang Yi Qiao Lai Wen Niu Hong Geng Zhai Ni Guan Bao Zhan Yue Ke Zuo Qi Mei Sheng Tong Ling
Huo Lan Ji Shu Ou Jian Rao Bi Hang Dou Lian Qu Pang Nie Jiao Ruan Lou Bu Ge Mu Quan Xing Lyu Ai
Gan Chai Chu Diao Gou Gui Hua Jing Ju Kuang Lang Leng Mi Miao Ning Pu Qiang Rong Ru Sha Shang She
Shuai Si Sui Tai Teng Tu Weng Xi Xian Xin Xun You Yun Zang Zha Zhen Zhuo Zong Zu Ban Bian Bo Cen
Chao Chi Cong Dang Di Dian Gai Heng Huan Kan Kou Kui Lao Le Luan Man Min Ming Mou Nan Nian Nong
Pei Pi Ping Qing Que Ran Rui Sang Shan Shui Zan Zhuang Zi Ouyang Sima Zhuge Shangguan Situ Dongfang
Huangfu Murong Gongsun Linghu Yuwen Zhangsun Duanmu Xiahou Wenren Baili Dongguo Nangong"""
GIVEN_SYLLABLES = """Wei Fang Xiu Ying Min Jing Li Qiang Lei Jun Yang Yong Yan Jie Tao Ming Chao Xia
Hua Ping Gang Hui Hong Lin Na Mei Juan Feng Bin Hao Yu Xin Zhi Wen Jian Peng Rui Kai Qing Lan Ting
Shu Hai Bo Dan Yun Chen Xue Guo Zhen Fei Long Shan Cheng Yi Le Ning Xuan Zi Han An"""
FAMILY = FAMILY_NAMES.split()
SYLLABLES = GIVEN_SYLLABLES.split()

#: LOINC code -> (display, UCUM unit, low, high, decimals)
VITALS: dict[str, tuple[str, str, float, float, int]] = {
    "8867-4": ("Heart rate", "/min", 52, 110, 0),
    "9279-1": ("Respiratory rate", "/min", 12, 22, 0),
    "8480-6": ("Systolic blood pressure", "mm[Hg]", 95, 165, 0),
    "8462-4": ("Diastolic blood pressure", "mm[Hg]", 55, 100, 0),
    "29463-7": ("Body weight", "kg", 42, 98, 1),
    "8302-2": ("Body height", "cm", 148, 188, 1),
    "39156-5": ("Body mass index (BMI) [Ratio]", "kg/m2", 17.5, 33, 1),
    "59408-5": ("Oxygen saturation in Arterial blood by Pulse oximetry", "%", 93, 100, 0),
}
#: panel LOINC code -> (display, {result code: (display, unit, low, high, decimals)})
PANELS: dict[str, tuple[str, dict[str, tuple[str, str, float, float, int]]]] = {
    "24323-8": ("Comprehensive metabolic panel - Serum or Plasma", {
        "2345-7": ("Glucose [Moles/volume] in Serum or Plasma", "mmol/L", 3.9, 11.0, 1),
        "2160-0": ("Creatinine [Moles/volume] in Serum or Plasma", "umol/L", 50, 130, 0),
        "3094-0": ("Urea nitrogen [Moles/volume] in Serum or Plasma", "mmol/L", 2.5, 8.0, 1),
        "2951-2": ("Sodium [Moles/volume] in Serum or Plasma", "mmol/L", 135, 145, 0),
        "2823-3": ("Potassium [Moles/volume] in Serum or Plasma", "mmol/L", 3.5, 5.1, 1),
        "2075-0": ("Chloride [Moles/volume] in Serum or Plasma", "mmol/L", 98, 107, 0),
        "1742-6": ("Alanine aminotransferase [Enzymatic activity/volume]", "U/L", 7, 56, 0),
        "1920-8": ("Aspartate aminotransferase [Enzymatic activity/volume]", "U/L", 10, 40, 0)}),
    "58410-2": ("CBC panel - Blood by Automated count", {
        "6690-2": ("Leukocytes [#/volume] in Blood by Automated count", "10*9/L", 4, 10, 1),
        "789-8": ("Erythrocytes [#/volume] in Blood by Automated count", "10*12/L", 3.8, 5.6, 2),
        "718-7": ("Hemoglobin [Mass/volume] in Blood", "g/L", 110, 170, 0),
        "4544-3": ("Hematocrit [Volume Fraction] of Blood", "%", 35, 50, 1),
        "777-3": ("Platelets [#/volume] in Blood by Automated count", "10*9/L", 150, 400, 0)}),
    "57698-3": ("Lipid panel with direct LDL - Serum or Plasma", {
        "2093-3": ("Cholesterol [Moles/volume] in Serum or Plasma", "mmol/L", 3.0, 7.0, 2),
        "2571-8": ("Triglyceride [Moles/volume] in Serum or Plasma", "mmol/L", 0.5, 3.0, 2),
        "2085-9": ("Cholesterol in HDL [Moles/volume] in Serum or Plasma", "mmol/L", 0.8, 2.0, 2),
        "13457-7": ("Cholesterol in LDL [Moles/volume] in Serum or Plasma", "mmol/L",
                    1.5, 5.0, 2)}),
    "4548-4": ("Hemoglobin A1c/Hemoglobin.total in Blood", {
        "4548-4": ("Hemoglobin A1c/Hemoglobin.total in Blood", "%", 4.5, 9.0, 1)}),
}
PANEL_CODES, PANEL_WEIGHTS = ("24323-8", "58410-2", "57698-3", "4548-4"), (3, 3, 2, 1)
BASE_VITALS = ("8867-4", "8480-6", "8462-4")  # heart rate and blood pressure at every visit
OTHER_VITALS = sorted(set(VITALS) - set(BASE_VITALS))
LAB_CODES = {code: spec for _, results in PANELS.values() for code, spec in results.items()}
#: what the benchmark writes (create/update rows): a code the data set never uses
WRITE_CODE = ("8310-5", "Body temperature", "Cel")


class BenchError(Exception):
    """Stops the benchmark with a message: the data set or an answer is not what it
    should be."""


@dataclass(frozen=True)
class PatientSpec:
    index: int
    id: str
    resident_id: str
    family: str
    given: str
    gender: str
    birth_date: str
    area: str
    observations: int


@dataclass(frozen=True)
class Obs:
    id: str
    code: str
    category: str
    effective: datetime


@dataclass
class Record:
    """One patient's resources, and what searches over them should find."""

    spec: PatientSpec
    resources: list[dict[str, Any]]
    observations: list[Obs] = field(default_factory=list)
    reports: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Plan:
    seed: int
    scale: float
    patients: tuple[PatientSpec, ...]
    heavy: tuple[int, ...]  # indexes of the patients with thousands of Observations

    @cached_property
    def tag(self) -> dict[str, str]:
        """Every resource's tag, naming the data set: the same ids hold other records
        in a data set of another size."""
        sizes = f"{self.seed}:{len(self.patients)}:{sum(p.observations for p in self.patients)}"
        return {"system": TAG_SYSTEM, "code": f"search-bench-{sizes}"}


def make_id(seed: int, *parts: object) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, ":".join(map(str, (seed, *parts)))))


def resident_id(area: str, born: date, seq: int) -> str:
    body = f"{area}{born:%Y%m%d}{seq:03d}"
    return body + "10X98765432"[sum(int(d) * w for d, w in zip(body, WEIGHTS, strict=True)) % 11]


def generated_sizes(scale: float, synthea_patients: int,
                    synthea_observations: int) -> tuple[int, int]:
    """Patients and Observations to generate: at scale 1 they bring the totals, Synthea
    included, to FULL_PATIENTS and FULL_OBSERVATIONS."""
    patients = max(HEAVY_PATIENTS + 20, round((FULL_PATIENTS - synthea_patients) * scale))
    observations = round((FULL_OBSERVATIONS - synthea_observations) * scale)
    return patients, observations


def make_plan(seed: int, scale: float, patients: int, observations: int) -> Plan:
    """Who exists and how many Observations each has. Resident IDs are unique (a taken
    one moves to the next sequence number of the same gender)."""
    rng = random.Random(f"{seed}:plan")
    ranks = list(itertools.accumulate(1 / (r + 1) ** 0.5 for r in range(len(FAMILY))))
    areas = sorted(AREAS)
    heavy = tuple(sorted(rng.sample(range(patients), HEAVY_PATIENTS)))
    heavy_factor = max(scale, 0.05)
    heavy_sizes = {i: round(rng.randint(*HEAVY_RANGE) * heavy_factor) for i in heavy}
    rest = max(0, observations - sum(heavy_sizes.values()))
    regular = [i for i in range(patients) if i not in heavy_sizes]
    weights = [rng.lognormvariate(0, 1) for _ in regular]
    total = sum(weights)
    shares = [w / total * rest for w in weights]
    counts = {i: int(s) for i, s in zip(regular, shares, strict=True)}
    by_fraction = sorted(zip(regular, shares, strict=True), key=lambda t: t[1] - int(t[1]),
                         reverse=True)
    for i, _ in by_fraction[: rest - sum(counts.values())]:
        counts[i] += 1
    counts.update(heavy_sizes)
    taken: set[str] = set()
    specs = []
    for i in range(patients):
        adult = i in heavy_sizes
        age_days = rng.randint(18 * 365 if adult else 60, 95 * 365)
        born = date(2024, 12, 31) - timedelta(days=age_days)
        gender = rng.choice(("male", "female"))
        area = rng.choice(areas)
        seq = rng.randrange(1, 999)
        seq += (seq % 2) != (gender == "male")  # odd for men, even for women
        number = resident_id(area, born, seq)
        while number in taken:
            seq = seq + 2 if seq + 2 < 1000 else 1 + (gender == "female")
            number = resident_id(area, born, seq)
        taken.add(number)
        given = "".join(rng.choice(SYLLABLES) for _ in range(rng.choice((1, 2, 2))))
        specs.append(PatientSpec(
            index=i, id=make_id(seed, "Patient", i), resident_id=number,
            family=rng.choices(FAMILY, cum_weights=ranks)[0], given=given.capitalize(),
            gender=gender,
            birth_date=born.isoformat(), area=area, observations=counts[i]))
    return Plan(seed, scale, tuple(specs), heavy)


def _quantity(rng: random.Random, spec: tuple[str, str, float, float, int]) -> dict[str, Any]:
    _, unit, low, high, decimals = spec
    value: float | int = round(rng.uniform(low, high), decimals)
    if decimals == 0:
        value = int(value)
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def patient_resource(plan: Plan, spec: PatientSpec) -> dict[str, Any]:
    rng = random.Random(f"{plan.seed}:contact:{spec.index}")
    province, city, district = AREAS[spec.area]
    return {
        "resourceType": "Patient", "id": spec.id, "meta": {"tag": [plan.tag]},
        "identifier": [{"use": "official", "system": RID, "value": spec.resident_id}],
        "active": True,
        "name": [{"use": "official", "family": spec.family, "given": [spec.given]}],
        "telecom": [{"system": "phone", "use": "mobile",
                     "value": f"1{rng.choice('3456789')}{rng.randrange(10**9):09d}"}],
        "gender": spec.gender,
        "birthDate": spec.birth_date,
        "address": [{"use": "home", "district": district, "city": city, "state": province,
                     "country": "CN"}],
    }


def record(plan: Plan, spec: PatientSpec) -> Record:
    """The Patient, their Observations and DiagnosticReports, in that order (a
    report's results precede it, for an import that checks references)."""
    seed, tag = plan.seed, plan.tag
    rng = random.Random(f"{seed}:record:{spec.index}")
    rec = Record(spec, [patient_resource(plan, spec)])
    start = max(FIRST_DAY, date.fromisoformat(spec.birth_date) + timedelta(days=1))
    days = (LAST_DAY - start).days
    subject = {"reference": f"Patient/{spec.id}"}
    left = spec.observations
    reports: list[dict[str, Any]] = []
    while left > 0:
        day = start + timedelta(days=rng.randint(0, days))
        at = datetime(day.year, day.month, day.day, rng.randint(7, 17), rng.randrange(60),
                      rng.randrange(60), tzinfo=CST)
        kind = "vital-signs" if rng.random() < 0.55 else "laboratory"  # 1 report per ~10 results
        if kind == "vital-signs":
            extra = rng.sample(OTHER_VITALS, rng.randint(1, 4))
            groups: list[tuple[str | None, list[str]]] = [(None, [*BASE_VITALS, *extra])]
        else:
            drawn = rng.choices(PANEL_CODES, PANEL_WEIGHTS, k=rng.choice((1, 1, 2)))
            panels = list(dict.fromkeys(drawn))  # two draws of one panel make one
            groups = [(p, sorted(PANELS[p][1])) for p in panels]
        for panel, codes in groups:
            results = []
            for code in codes[:left]:
                test = VITALS[code] if panel is None else LAB_CODES[code]
                oid = make_id(seed, "Observation", spec.index, len(rec.observations))
                rec.observations.append(Obs(oid, code, kind, at))
                rec.resources.append({
                    "resourceType": "Observation", "id": oid, "meta": {"tag": [tag]},
                    "status": "final",
                    "category": [{"coding": [{"system": CATEGORY, "code": kind}]}],
                    "code": {"coding": [{"system": LOINC, "code": code, "display": test[0]}],
                             "text": test[0]},
                    "subject": subject,
                    "effectiveDateTime": at.isoformat(),
                    "issued": (at + timedelta(hours=rng.randint(0, 30))).isoformat(),
                    "valueQuantity": _quantity(rng, test),
                })
                results.append({"reference": f"Observation/{oid}", "display": test[0]})
            left -= len(results)
            if panel is not None and results:
                rid = make_id(seed, "DiagnosticReport", spec.index, len(rec.reports))
                rec.reports.append(rid)
                reports.append({
                    "resourceType": "DiagnosticReport", "id": rid, "meta": {"tag": [tag]},
                    "status": "final",
                    "category": [{"coding": [{"system": V2_0074, "code": "LAB",
                                              "display": "Laboratory"}]}],
                    "code": {"coding": [{"system": LOINC, "code": panel,
                                         "display": PANELS[panel][0]}]},
                    "subject": subject, "effectiveDateTime": at.isoformat(),
                    "issued": (at + timedelta(hours=rng.randint(2, 30))).isoformat(),
                    "result": results,
                })
    rec.resources += reports
    return rec


def fold(text: str) -> str:
    """What a FHIR string search compares: case and accents folded."""
    return "".join(c for c in unicodedata.normalize("NFKD", text)
                   if not unicodedata.combining(c)).casefold()


def synthea_summary(paths: list[Path]) -> dict[str, Any]:
    """What the Synthea bundles add to the expected search results: their Patients
    (id, family names, birth date), their Observation counts per LOINC code, and the
    number of resources the import keeps."""
    patients: list[dict[str, Any]] = []
    codes: Counter[str] = Counter()
    kept = Counter[str]()
    for path in paths:
        with gzip.open(path) if path.suffix == ".gz" else path.open("rb") as fh:
            bundle = json.load(fh)
        for entry in bundle.get("entry", []):
            res = entry["resource"]
            rtype = res["resourceType"]
            if rtype in SUPPORTED_TYPES:  # what `fhirserver import` keeps and counts
                kept[rtype] += 1
            if rtype == "Patient":
                patients.append({"id": res["id"], "birthDate": res.get("birthDate"),
                                 "family": [n["family"] for n in res.get("name", [])
                                            if "family" in n]})
            elif rtype == "Observation":
                for code in {c["code"] for c in res["code"].get("coding", [])
                             if c.get("system") == LOINC}:
                    codes[code] += 1
    return {"files": [str(p) for p in paths], "patients": patients, "codes": dict(codes),
            "kept": dict(kept)}
